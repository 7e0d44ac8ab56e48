"""The data behind the report's explorer: a per-noun sample of the pairs, small enough to embed in a static page
of a 1M-pair output, with the pictures the page needs and, with ground truth, each pair's verdict.

Every noun with few pairs is there whole; a frequent noun is a uniform sample of its pairs (a reservoir per
noun, one streaming pass), so marking the sample in its shuffled order estimates that noun's precision without
bias (`mining.postrun.audit`). Each sampled image comes once: its thumbnail, a layer with every mask the teacher
kept (paired or not, each in its own colour), its captions and entities; each pair adds its own mask layer.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image

from mining import masks
from mining.evaluation.score import DUPLICATE, RIGHT, WRONG
from mining.postrun.report_gallery import (GALLERY_COLUMNS, PAIR_FILL, PAIR_OUTLINE, GalleryPair, Pictures, _Reservoir,
                                          b64, layer_png, picture_html)
from mining.sinks.reader import iter_pair_batches, pairs_files
from mining.storage import Where

EXPLORE_THUMB = 160
EXPLORE_QUALITY = 80   # JPEG quality of the explorer's thumbnails: a thousand of them share one page
EXPLORE_COLUMNS = [*GALLERY_COLUMNS, "area"]
PALETTE = [tuple(int(255 * c) for c in colormaps["tab20"](i)[:3]) for i in range(20)]


def allocate(counts: Counter[str] | dict[str, int], budget: int) -> dict[str, int]:
    """Pairs per noun in the page: all of a noun's pairs up to a common level q, and q of each larger noun, with
    q as large as `budget` allows (what is left below the next level goes, one each, to the most frequent
    nouns). When even one pair per noun is over budget, the `budget` most frequent nouns get one each."""
    nouns = sorted(counts, key=lambda n: (counts[n], n))   # smallest first
    left, share = budget, {}
    for i, noun in enumerate(nouns):
        level = left // (len(nouns) - i)
        if counts[noun] <= level:
            share[noun] = counts[noun]
            left -= counts[noun]
            continue
        rest = nouns[i:][::-1]   # most frequent first
        if level == 0:
            share.update({n: 1 for n in rest[:left]})
            return share
        share.update({n: level for n in rest})
        for n in rest[:left - level * len(rest)]:
            share[n] += 1
        return share
    return share


@dataclass
class ExplorerSample:
    pairs: list[GalleryPair]      # in a shuffled order: marking them in it keeps each noun's marks uniform
    area: dict[int, int]          # id(pair) -> mask area, pixels of the working frame
    shown: dict[str, int]         # noun -> pairs in the page
    totals: dict[str, int]        # noun -> pairs in the output
    pool: dict[str, int]          # noun -> pairs in the shards sampled from (all of them, unless max_shards cut)
    shards: tuple[int, int] = (0, 0)   # (shards sampled from, shards in the output)


def noun_counts(output: Where, files: list | None = None) -> Counter[str]:
    """Pairs per noun, read from the pairs tables' noun column alone (of `files`, or of every committed shard)."""
    counts: Counter[str] = Counter()
    for pairs in pairs_files(output) if files is None else files:
        for batch in iter_pair_batches(pairs, ["noun"]):
            counts.update(batch.column(0).to_pylist())
    return counts


def sample_pairs(output: Where, counts: Counter[str], budget: int, seed: int,
                 max_shards: int | None = None) -> ExplorerSample:
    """One streaming pass: a reservoir of each noun's allocated size; memory O(budget). With more than
    `max_shards` shards, the pairs come from that many shards chosen at random: a picture is read back from its
    input shard, so pictures spread over every shard of a large output would mean reading all of its inputs."""
    rng = np.random.default_rng(seed)
    files = pairs_files(output)
    pool = counts
    if max_shards is not None and len(files) > max_shards:
        chosen = sorted(int(i) for i in rng.choice(len(files), max_shards, replace=False))
        files_all, files = len(files), [files[i] for i in chosen]
        pool = noun_counts(output, files)
    else:
        files_all = len(files)
    share = allocate(pool, budget)
    reservoirs = {noun: _Reservoir(k, rng) for noun, k in share.items() if k > 0}
    for pairs in files:
        for batch in iter_pair_batches(pairs, EXPLORE_COLUMNS):
            for row in batch.to_pylist():
                reservoir = reservoirs.get(row["noun"])
                if reservoir is not None:
                    area = row.pop("area")
                    reservoir.offer((GalleryPair(**row), area))
    chosen = [item for r in reservoirs.values() for item in r.items]
    order = rng.permutation(len(chosen))
    pairs = [chosen[i][0] for i in order]
    return ExplorerSample(pairs, {id(p): a for p, a in chosen}, {n: len(r.items) for n, r in reservoirs.items()},
                          dict(counts), dict(pool), (len(files), files_all))


def masks_layer(rles: list[dict[str, Any]], height: int, width: int) -> str:
    """Every mask in its palette colour (by index, as the per-image view lists them), largest first so that
    small masks stay visible."""
    decoded = [(masks.decode(r), PALETTE[i % len(PALETTE)]) for i, r in enumerate(rles)]
    styled = [(m, (*c, 110), (*c, 255)) for m, c in sorted(decoded, key=lambda d: -int(d[0].sum()))]
    return layer_png(styled, height, width)


def layered_thumb(image: np.ndarray, rles: list[dict[str, Any]], alt: str, size: int) -> str:
    """A card's picture: the image with every mask over it (the page's "show masks" switch hides them)."""
    thumb = Image.fromarray(image)
    thumb.thumbnail((size, size))
    layer = masks_layer(rles, thumb.height, thumb.width) if rles else None
    return picture_html(b64(thumb, "JPEG", EXPLORE_QUALITY), layer, alt, "masks of")


def _image_entry(stem: str, key: str, image: np.ndarray | None, record: dict[str, Any] | None,
                 size: int) -> dict[str, Any]:
    """What the per-image view shows: the picture, every mask of the record in its colour (largest first, so
    small masks stay visible), and which noun each mask was paired with."""
    entry: dict[str, Any] = {"shard": stem, "key": key, "captions": [], "entities": [], "masks": []}
    if record is None:
        return entry
    entry["captions"] = record["captions"]
    paired = {p["entity_index"] for p in record["pairs"]}
    entry["entities"] = [{"noun": e["noun"], "phrase": e["phrase"], "paired": i in paired}
                         for i, e in enumerate(record["entities"])]
    nouns: dict[int, list[str]] = defaultdict(list)
    for p in record["pairs"]:
        nouns[p["mask_index"]].append(f'{p["noun"]} ({p["similarity"]:.2f})')
    entry["masks"] = [{"index": i, "area": m["area"], "colour": "#%02x%02x%02x" % PALETTE[i % len(PALETTE)],
                       "pairs": nouns.get(i, [])} for i, m in enumerate(record["masks"])]
    if image is None:
        return entry
    thumb = Image.fromarray(image)
    thumb.thumbnail((size, size))
    entry["image"] = b64(thumb, "JPEG", EXPLORE_QUALITY)
    entry["layer"] = masks_layer([m["segmentation"] for m in record["masks"]], thumb.height, thumb.width)
    entry["size"] = [thumb.width, thumb.height]
    return entry


def explorer_data(sample: ExplorerSample, pictures: Pictures, verdicts: dict[PairKey, str] | None = None,
                  size: int = EXPLORE_THUMB) -> dict[str, Any]:
    """The JSON the page's script reads: images (each once) and pairs pointing at them; `pictures` holds the
    sampled pairs' images and records (fetched with the report's others: one read of each input shard);
    `verdicts`: the ground truth's verdict of each pair (see `judge`)."""
    wanted = sorted({(p.shard, p.key) for p in sample.pairs})
    index = {where: i for i, where in enumerate(wanted)}
    images = [_image_entry(stem, key, pictures.images.get((stem, key)), pictures.records.get((stem, key)), size)
              for stem, key in wanted]
    rows = []
    for order, pair in enumerate(sample.pairs):
        where = (pair.shard, pair.key)
        image = images[index[where]]
        row = {"order": order, "image": index[where], "shard": pair.shard, "key": pair.key,
               "mask": pair.mask_index, "noun": pair.noun, "phrase": pair.phrase,
               "similarity": round(pair.similarity, 4),
               "margin": None if pair.margin is None else round(pair.margin, 4), "area": sample.area[id(pair)]}
        if "size" in image:
            row["layer"] = layer_png([(pair.mask(), PAIR_FILL, PAIR_OUTLINE)], image["size"][1], image["size"][0])
        if verdicts is not None:
            row["truth"] = verdicts.get((pair.shard, pair.key, pair.mask_index, pair.noun), "not in ground truth")
        rows.append(row)
    nouns = sorted(sample.totals, key=lambda n: (-sample.totals[n], n))
    return {"images": images, "pairs": rows, "shards": list(sample.shards),
            "nouns": [[n, sample.shown.get(n, 0), sample.pool.get(n, 0), sample.totals[n]] for n in nouns]}


PairKey = tuple[str, str, int, str]   # (output shard, key, mask index, noun): one pair of an output


@dataclass
class Truth:
    """The ground truth's verdict of the sampled pairs, and per noun the verdicts of all of them."""

    verdicts: dict[PairKey, str]
    per_noun: dict[str, Counter[str]]
    report: dict[str, Any]            # what `ovmine eval --json` prints for the same output and ground truth

    def noun_rows(self) -> list[dict[str, Any]]:
        rows = []
        for noun, v in sorted(self.per_noun.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
            judged = v[RIGHT] + v[WRONG] + v[DUPLICATE]
            rows.append({"noun": noun, "pairs": sum(v.values()), "judged": judged, "right": v[RIGHT],
                         "duplicates": v[DUPLICATE], "precision": v[RIGHT] / judged if judged else None})
        return rows


def judge(output: Where, gt: Where, synonyms: Where | None, wanted: set[tuple[str, str]]) -> Truth:
    """`ovmine eval`'s scoring, keeping each pair's verdict: per noun for every pair, and for the pairs of the
    `wanted` (shard, key) images one by one."""
    from mining.evaluation.run import evaluate

    verdicts: dict[PairKey, str] = {}
    per_noun: dict[str, Counter[str]] = defaultdict(Counter)

    def on_image(stem: str, record, result) -> None:
        for pair, verdict in zip(record.pairs if record is not None else [], result.verdicts):
            per_noun[pair.noun][verdict] += 1
            if (stem, record.key) in wanted:
                verdicts[(stem, record.key, pair.mask_index, pair.noun)] = verdict

    report = evaluate(output, gt, synonyms=synonyms, progress=False, on_image=on_image)
    return Truth(verdicts, dict(per_noun), report)
