"""The report's pictures: which pairs to show (one streaming pass over the pairs tables), their records'
captions, and each pair drawn as a card: the image, its mask as a separate transparent layer (so the page can
switch between the overlay and the raw image), the noun, the scores and the captions with the phrase marked.
"""
from __future__ import annotations

import base64
import heapq
import html
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from mining.config import RunConfig
from mining.sinks.images import load_images
from mining.sinks.layout import shard_file
from mining.sinks.reader import iter_pair_batches, pairs_files, read_shard_documents
from mining.storage import Where
from mining import masks

GALLERY_COLUMNS = ["shard", "key", "mask_index", "entity_index", "noun", "phrase", "similarity", "margin",
                   "rle_counts", "height", "width"]
THUMB = 256
SMALL_THUMB = 160
CAPTION_CHARS = 300

ImageKey = tuple[str, str]   # (output shard stem, key)


@dataclass
class GalleryPair:
    shard: str
    key: str
    mask_index: int
    entity_index: int
    noun: str
    phrase: str
    similarity: float
    margin: float | None
    rle_counts: str
    height: int
    width: int

    def mask(self) -> np.ndarray:
        """bool[height, width] in the record's working frame."""
        return masks.decode({"size": [self.height, self.width], "counts": self.rle_counts})


@dataclass
class Selection:
    """What the report shows: a random sample, the lowest-similarity pairs, and per noun a random sample and
    its phrases (the words captions used for it: where synonyms and junk show)."""

    random: list[GalleryPair] = field(default_factory=list)
    lowest: list[GalleryPair] = field(default_factory=list)
    by_noun: dict[str, list[GalleryPair]] = field(default_factory=dict)
    phrases: dict[str, Counter[str]] = field(default_factory=dict)

    def pairs(self) -> list[GalleryPair]:
        return self.random + self.lowest + [p for ps in self.by_noun.values() for p in ps]


class _Reservoir:
    """A uniform sample of k items from a stream (Algorithm R), O(k) memory."""

    def __init__(self, k: int, rng: np.random.Generator) -> None:
        self.k, self.rng, self.items, self.seen = k, rng, [], 0

    def offer(self, item: Any) -> None:
        if len(self.items) < self.k:
            self.items.append(item)
        else:
            j = int(self.rng.integers(0, self.seen + 1))
            if j < self.k:
                self.items[j] = item
        self.seen += 1


def select_pairs(output: Where, k: int, seed: int, nouns: list[str] = (),
                 per_noun: int = 3) -> Selection:
    """One streaming pass: reservoir samples (overall, and per noun of `nouns`) and a bounded heap of the
    lowest similarities; memory O(k + len(nouns) x per_noun), plus the phrases of `nouns`."""
    rng = np.random.default_rng(seed)
    overall = _Reservoir(k, rng)
    by_noun = {noun: _Reservoir(per_noun, rng) for noun in nouns}
    phrases: dict[str, Counter[str]] = {noun: Counter() for noun in nouns}
    lowest: list[tuple[float, int, GalleryPair]] = []   # max-heap on similarity via negation
    seen = 0
    for pairs in pairs_files(output):
        for batch in iter_pair_batches(pairs, GALLERY_COLUMNS):
            for row in batch.to_pylist():
                pair = GalleryPair(**row)
                overall.offer(pair)
                if pair.noun in by_noun:
                    by_noun[pair.noun].offer(pair)
                    phrases[pair.noun][pair.phrase] += 1
                item = (-pair.similarity, seen, pair)
                if len(lowest) < k:
                    heapq.heappush(lowest, item)
                elif item > lowest[0]:
                    heapq.heapreplace(lowest, item)
                seen += 1
    return Selection(random=overall.items, lowest=[p for _, _, p in sorted(lowest, key=lambda t: (-t[0], t[1]))],
                     by_noun={noun: r.items for noun, r in by_noun.items()}, phrases=phrases)


def read_records(output: Where, wanted: set[ImageKey]) -> dict[ImageKey, dict[str, Any]]:
    """The record JSON (captions, entities) of each wanted (stem, key), without image bytes."""
    by_shard: dict[str, set[str]] = defaultdict(set)
    for stem, key in wanted:
        by_shard[stem].add(key)
    records = {}
    for stem, keys in by_shard.items():
        shard = shard_file(output, stem)
        for doc, _ in read_shard_documents(shard) if shard.exists() else []:
            if doc["key"] in keys:
                records[(stem, doc["key"])] = doc
    return records


def source_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """How the run decoded its images: its config's, or (a run in progress has no config yet) the defaults
    with no size guard. Masks are resized to the image either way, so an overlay always lines up."""
    if manifest.get("config"):
        return manifest
    source = RunConfig().resolved()["source"] | {"max_image_pixels": 2**62}
    return {**manifest, "config": {"source": source}}


@dataclass
class Pictures:
    """Images (working frame) and records of the pairs a report shows."""

    images: dict[ImageKey, np.ndarray]
    records: dict[ImageKey, dict[str, Any]]


def fetch_pictures(output: Where, manifest: dict[str, Any], wanted: set[ImageKey]) -> Pictures:
    """The images (through the image re-read path that export and training use) and records of `wanted`."""
    if not wanted:
        return Pictures({}, {})
    return Pictures(load_images(output, source_settings(manifest), wanted), read_records(output, wanted))


PAIR_FILL, PAIR_OUTLINE = (255, 40, 40, 120), (255, 255, 0, 255)   # how a pair's mask looks on its card

MaskStyle = tuple[np.ndarray, tuple[int, int, int, int], tuple[int, int, int, int]]   # (mask, fill, outline)


def b64(image: Image.Image, fmt: str, quality: int = 85) -> str:
    """The image as base64 JPEG (at `quality`) or optimised PNG, for a data: URI."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {"optimize": True}))
    return base64.b64encode(buf.getvalue()).decode()


def layer_png(styled: list[MaskStyle], height: int, width: int) -> str:
    """The layer a card shows over its picture, base64 PNG of `height` x `width`: each mask (resized to it)
    tinted inside and outlined in its style, later ones on top, transparent elsewhere."""
    layer = np.zeros((height, width, 4), np.uint8)
    for mask, fill, outline in styled:
        inside = masks.resize(mask, height, width)
        layer[inside] = fill
        layer[find_boundaries(inside, mode="inner")] = outline
    return b64(Image.fromarray(layer, "RGBA"), "PNG")


def thumbnails(image: np.ndarray, mask: np.ndarray | None, size: int = THUMB) -> tuple[str, str | None]:
    """(JPEG of the image, PNG of the mask layer), base64, both `size` on the long side, so that the layer sits
    exactly on the image."""
    thumb = Image.fromarray(image)
    thumb.thumbnail((size, size))
    layer = None if mask is None else layer_png([(mask, PAIR_FILL, PAIR_OUTLINE)], thumb.height, thumb.width)
    return b64(thumb, "JPEG"), layer


def picture_html(raw: str, layer: str | None, alt: str, layer_alt: str = "mask of") -> str:
    """A card's picture from base64 JPEG and PNG: the raw image with the layer over it (the page's toggle
    hides the layer)."""
    over = (f'<img class=mask alt="{layer_alt} {html.escape(alt)}" src="data:image/png;base64,{layer}">'
            if layer else "")
    return (f'<div class=thumb><img class=raw alt="{html.escape(alt)}" src="data:image/jpeg;base64,{raw}">'
            f'{over}</div>')


def thumb_html(image: np.ndarray | None, mask: np.ndarray | None, alt: str, size: int = THUMB,
               missing: str = "image unavailable") -> str:
    """The picture of a card: the raw image with the mask layer over it (hidden by the page's toggle)."""
    if image is None:
        return f'<div class=noimg>{html.escape(missing)}</div>'
    return picture_html(*thumbnails(image, mask, size), alt)


def captions_html(captions: list[str], mark: tuple[int, int, int] | None = None) -> str:
    """The captions, each cut at CAPTION_CHARS; `mark`: (caption index, start, end) of the phrase to mark."""
    items = []
    for i, caption in enumerate(captions):
        if mark and mark[0] == i and mark[2] <= len(caption):
            start, end = mark[1], mark[2]
            text = (html.escape(caption[:start]) + f"<mark>{html.escape(caption[start:end])}</mark>"
                    + html.escape(caption[end:CAPTION_CHARS] if end < CAPTION_CHARS else ""))
        else:
            text = html.escape(caption[:CAPTION_CHARS])
        items.append(f"<li>{text}{'…' if len(caption) > CAPTION_CHARS else ''}</li>")
    return f"<ol class=captions>{''.join(items)}</ol>" if items else "<p class=captions>(no caption)</p>"


def pair_card(pair: GalleryPair, pictures: Pictures, size: int = THUMB, with_captions: bool = True) -> str:
    where = (pair.shard, pair.key)
    image = pictures.images.get(where)
    record = pictures.records.get(where)
    mark = None
    if record is not None and pair.entity_index < len(record["entities"]):
        entity = record["entities"][pair.entity_index]
        mark = (entity["caption_index"], *entity["span"])
    margin = "no rival" if pair.margin is None else f"{pair.margin:.3f}"
    text = (f"<b>{html.escape(pair.noun)}</b> <span class=phrase>{html.escape(pair.phrase)}</span><br>"
            f"sim {pair.similarity:.3f} · margin {margin}<br>"
            f"<small>{html.escape(pair.shard)}/{html.escape(pair.key)} mask {pair.mask_index}</small>")
    if with_captions and record is not None:
        text += captions_html(record["captions"], mark)
    picture = thumb_html(image, pair.mask() if image is not None else None, pair.noun, size)
    return f'<figure class="card pair">{picture}<figcaption>{text}</figcaption></figure>'
