"""A self-contained HTML report of a mining output: the statistics as plots, and a gallery of pairs (a random
sample, and the lowest-similarity pairs, where a person looks for mistakes), each the image with its mask.

Everything (plots, thumbnails) is inlined as base64, so the file can be mailed or opened from a bucket.
"""
from __future__ import annotations

import base64
import heapq
import html
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure   # the object API: no pyplot state, no GUI backend needed
from PIL import Image
from pycocotools import mask as mask_utils
from skimage.segmentation import find_boundaries

from mining.sinks.images import load_images
from mining.sinks.reader import iter_pair_batches, pairs_files, read_manifest
from mining.storage import S3Options
from mining.teachers.base import resize_mask

GALLERY_COLUMNS = ["shard", "key", "mask_index", "noun", "phrase", "similarity", "margin", "rle_counts",
                   "height", "width"]
THUMB = 256


@dataclass
class GalleryPair:
    shard: str
    key: str
    mask_index: int
    noun: str
    phrase: str
    similarity: float
    margin: float | None
    rle_counts: str
    height: int
    width: int


def sample_pairs(output: str, s3: S3Options | None, k: int, seed: int) -> tuple[list[GalleryPair], list[GalleryPair]]:
    """(a uniform random sample of k pairs, the k lowest-similarity pairs), in one streaming pass with
    O(k) memory: reservoir sampling and a bounded heap."""
    rng = np.random.default_rng(seed)
    reservoir: list[GalleryPair] = []
    lowest: list[tuple[float, int, GalleryPair]] = []   # max-heap on similarity via negation
    seen = 0
    for uri in pairs_files(output, s3):
        for batch in iter_pair_batches(uri, GALLERY_COLUMNS, s3):
            for row in batch.to_pylist():
                pair = GalleryPair(**row)
                if len(reservoir) < k:
                    reservoir.append(pair)
                else:
                    j = int(rng.integers(0, seen + 1))
                    if j < k:
                        reservoir[j] = pair
                item = (-pair.similarity, seen, pair)
                if len(lowest) < k:
                    heapq.heappush(lowest, item)
                elif item > lowest[0]:
                    heapq.heapreplace(lowest, item)
                seen += 1
    return reservoir, [p for _, _, p in sorted(lowest, key=lambda t: (-t[0], t[1]))]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _hist_plot(title: str, dist: dict[str, Any], xlabel: str, log_x: bool = False) -> str:
    fig = Figure(figsize=(4.2, 2.8))
    ax = fig.subplots()
    edges = np.asarray(dist["edges"])
    if len(edges) > 1:
        ax.stairs(dist["counts"], edges, fill=True, alpha=0.7)
    if log_x:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    return _png(fig)


def _bar_plot(title: str, labels: list[str], values: list[int], horizontal: bool = False, ylabel: str = "") -> str:
    fig = Figure(figsize=(4.2, max(2.8, 0.22 * len(labels)) if horizontal else 2.8))
    ax = fig.subplots()
    if horizontal:
        ax.barh(labels[::-1], values[::-1])
    else:
        ax.bar(labels, values)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _png(fig)


def overlay(image: np.ndarray, pair: GalleryPair) -> str:
    """JPEG thumbnail (base64) of the image with the mask tinted and outlined."""
    mask = mask_utils.decode({"size": [pair.height, pair.width], "counts": pair.rle_counts.encode()}).astype(bool)
    mask = resize_mask(mask, *image.shape[:2])
    tinted = image.astype(np.float32)
    tinted[mask] = 0.5 * tinted[mask] + 0.5 * np.array([255, 40, 40])
    tinted[find_boundaries(mask, mode="inner")] = (255, 255, 0)
    thumb = Image.fromarray(tinted.astype(np.uint8))
    thumb.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()


def _card(pair: GalleryPair, images: dict) -> str:
    image = images.get((pair.shard, pair.key))
    text = (f"<b>{html.escape(pair.noun)}</b> <span class=phrase>{html.escape(pair.phrase)}</span><br>"
            f"sim {pair.similarity:.3f} · margin {'no rival' if pair.margin is None else f'{pair.margin:.3f}'}<br><small>{html.escape(pair.shard)}/"
            f"{html.escape(pair.key)} mask {pair.mask_index}</small>")
    if image is None:
        return f'<figure class="pair missing"><div class=noimg>image unavailable</div><figcaption>{text}</figcaption></figure>'
    return (f'<figure class=pair><img alt="{html.escape(pair.noun)}" src="data:image/jpeg;base64,'
            f'{overlay(image, pair)}"><figcaption>{text}</figcaption></figure>')


def render_report(output: str, stats: dict[str, Any], s3: S3Options | None = None, gallery: int = 24,
                  seed: int = 0) -> str:
    d = stats["distributions"]
    plots = [
        _hist_plot("similarity", d["similarity"], "fused cosine similarity"),
        _hist_plot(f"margin: regret of the assignment ({d['margin'].get('no_rival', 0)} pairs had no rival)",
                   d["margin"], "margin"),
        _hist_plot("mask area", d["mask_area"], "pixels (working frame)", log_x=True),
        _bar_plot("masks per image", list(d["masks_per_image"]["values"]),
                  list(d["masks_per_image"]["values"].values()), ylabel="images"),
        _bar_plot("pairs per image", list(d["pairs_per_image"]["values"]),
                  list(d["pairs_per_image"]["values"].values()), ylabel="images"),
        _bar_plot("nouns by pair count (long tail)", list(stats["long_tail"]), list(stats["long_tail"].values()),
                  ylabel="nouns"),
    ]
    if stats["top_nouns"]:
        plots.append(_bar_plot("top nouns", [n for n, _ in stats["top_nouns"]], [c for _, c in stats["top_nouns"]],
                               horizontal=True))
    if stats["drops"]:
        plots.append(_bar_plot("drops by reason", list(stats["drops"]), list(stats["drops"].values()),
                               horizontal=True))
    random_pairs, low_pairs = sample_pairs(output, s3, gallery, seed)
    wanted = {(p.shard, p.key) for p in random_pairs + low_pairs}
    images = load_images(output, read_manifest(output, s3), wanted, s3) if wanted else {}
    rows = [("images in", stats["images_in"]), ("images with pairs", stats["images_with_pairs"]),
            ("pairs", stats["pairs"]), ("pairs per image", f"{stats['pairs_per_image']:.2f}"),
            ("unique nouns", stats["unique_nouns"]), ("dropped", sum(stats["drops"].values())),
            ("images/s", f"{stats['images_per_second']:.2f}"), ("config", stats["config_hash"])]
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    figures = "".join(f'<img class=plot alt="plot" src="data:image/png;base64,{p}">' for p in plots)
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>ovmine report: {html.escape(output)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 2px 12px 2px 0; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 12px; }} .plot {{ border: 1px solid #ddd; }}
.gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax({THUMB}px, 1fr)); gap: 12px; }}
figure.pair {{ margin: 0; border: 1px solid #ddd; padding: 6px; }} figure.pair img {{ width: 100%; }}
.phrase {{ color: #666; }} .noimg {{ height: 120px; background: #eee; display: grid; place-items: center; }}
</style></head><body>
<h1>ovmine report</h1><p>{html.escape(output)}</p>
<table id=summary>{table}</table>
<h2>Distributions</h2><div class=plots>{figures}</div>
<h2>Random pairs</h2><div class=gallery id=random>{"".join(_card(p, images) for p in random_pairs)}</div>
<h2>Lowest-similarity pairs</h2><div class=gallery id=lowest>{"".join(_card(p, images) for p in low_pairs)}</div>
</body></html>
"""
