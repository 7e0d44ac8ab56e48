"""Statistics of a mining output, streamed over its pairs parquet files in bounded memory.

Rows are read in record batches of a few columns; distributions go into fixed histogram bins, so memory
depends on the vocabulary and the largest shard, never on the total number of pairs. Run-level figures
(images in, drops, stage time) come from the manifest.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mining.sinks.reader import iter_pair_batches, pairs_files, read_manifest
from mining.storage import S3Options

COLUMNS = ["key", "noun", "similarity", "margin", "area", "image_masks"]
TAIL_BUCKETS = (("1", 1, 1), ("2-9", 2, 9), ("10-99", 10, 99), ("100+", 100, None))


@dataclass
class Histogram:
    """Counts in fixed bins; values outside the edges are clipped into the end bins."""

    edges: np.ndarray
    counts: np.ndarray = field(init=False)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.edges) - 1, np.int64)

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        clipped = np.clip(values, self.edges[0], self.edges[-1])
        self.counts += np.histogram(clipped, bins=self.edges)[0]
        self.total += float(values.sum())
        self.n += len(values)

    def quantile(self, q: float) -> float | None:
        """Upper edge of the bin holding the q-quantile (bin-width accuracy)."""
        if self.n == 0:
            return None
        index = int(np.searchsorted(np.cumsum(self.counts), q * self.n, side="left"))
        return float(self.edges[min(index + 1, len(self.edges) - 1)])

    def to_json(self) -> dict[str, Any]:
        nonzero = np.nonzero(self.counts)[0]
        lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if len(nonzero) else (0, 0)
        return {"n": self.n, "mean": self.total / self.n if self.n else None,
                "p10": self.quantile(0.1), "p50": self.quantile(0.5), "p90": self.quantile(0.9),
                "edges": [round(float(e), 6) for e in self.edges[lo:hi + 1]],
                "counts": [int(c) for c in self.counts[lo:hi]]}


class PairStats:
    def __init__(self) -> None:
        self.nouns: Counter[str] = Counter()
        self.similarity = Histogram(np.linspace(-1, 1, 101))
        self.margin = Histogram(np.linspace(0, 2, 101))    # regret >= 0; pairs with no rival counted apart
        self.no_rival = 0
        self.area = Histogram(np.logspace(0, 8, 81))         # pixels, 10 bins per decade
        self.pairs_per_image: Counter[int] = Counter()
        self.masks_per_image: Counter[int] = Counter()

    def add_file(self, batches: Iterable[pa.RecordBatch]) -> None:
        """One shard's pairs; per-image counts are keyed within the shard, so only one shard's keys are held."""
        per_image: Counter[str] = Counter()
        masks: dict[str, int] = {}
        for batch in batches:
            cols = batch.to_pydict()
            self.nouns.update(cols["noun"])
            self.similarity.add(np.asarray(cols["similarity"], np.float64))
            margins = [m for m in cols["margin"] if m is not None]
            self.no_rival += len(cols["margin"]) - len(margins)
            self.margin.add(np.asarray(margins, np.float64))
            self.area.add(np.asarray(cols["area"], np.float64))
            per_image.update(cols["key"])
            masks.update(zip(cols["key"], cols["image_masks"]))
        self.pairs_per_image.update(per_image.values())
        self.masks_per_image.update(masks.values())

    def long_tail(self) -> dict[str, int]:
        counts = np.fromiter(self.nouns.values(), dtype=np.int64, count=len(self.nouns))
        return {name: int(((counts >= lo) & ((counts <= hi) if hi else True)).sum()) for name, lo, hi in TAIL_BUCKETS}


def _per_image(counter: Counter[int]) -> dict[str, Any]:
    images = sum(counter.values())
    total = sum(k * v for k, v in counter.items())
    return {"images": images, "mean": total / images if images else None,
            "values": {str(k): counter[k] for k in sorted(counter)}}


def compute_stats(output: str, s3: S3Options | None = None, top_k: int = 20) -> dict[str, Any]:
    manifest = read_manifest(output, s3)
    stats = PairStats()
    for uri in pairs_files(output, s3):
        stats.add_file(iter_pair_batches(uri, COLUMNS, s3))
    totals = manifest["totals"]
    pairs = sum(stats.nouns.values())
    return {
        "output": output,
        "config_hash": manifest["config_hash"],
        "images_in": totals["images_in"],
        "images_with_pairs": totals["images_with_pairs"],
        "pairs": pairs,
        "pairs_per_image": pairs / totals["images_with_pairs"] if totals["images_with_pairs"] else 0.0,
        "unique_nouns": len(stats.nouns),
        "top_nouns": [[noun, n] for noun, n in stats.nouns.most_common(top_k)],
        "long_tail": stats.long_tail(),
        "distributions": {
            "similarity": stats.similarity.to_json(),
            "margin": stats.margin.to_json() | {"no_rival": stats.no_rival},
            "mask_area": stats.area.to_json(),
            "pairs_per_image": _per_image(stats.pairs_per_image),
            "masks_per_image": _per_image(stats.masks_per_image),
        },
        "drops": totals["drops"],
        "timings": manifest["timings"],
        "wall_seconds": manifest["wall_seconds"],
        "images_per_second": manifest["images_per_second"],
        "lineage": manifest.get("lineage"),
    }


def format_stats(stats: dict[str, Any]) -> str:
    """The terminal table."""
    d = stats["distributions"]

    def dist(name: str, fmt: str = ".3f") -> str:
        h = d[name]
        if not h["n"]:
            return "-"
        return f"mean {h['mean']:{fmt}}  p10 {h['p10']:{fmt}}  p50 {h['p50']:{fmt}}  p90 {h['p90']:{fmt}}"

    lines = [
        f"{stats['output']}  (config {stats['config_hash']})",
        f"  {'images in':<22}{stats['images_in']}",
        f"  {'images with pairs':<22}{stats['images_with_pairs']}",
        f"  {'pairs':<22}{stats['pairs']}",
        f"  {'pairs per image':<22}{stats['pairs_per_image']:.2f}",
        f"  {'unique nouns':<22}{stats['unique_nouns']}",
        f"  {'nouns by pair count':<22}" + ", ".join(f"{k}: {v}" for k, v in stats["long_tail"].items()),
        f"  {'similarity':<22}{dist('similarity')}",
        f"  {'margin (regret)':<22}{dist('margin')}"
        + (f" ({d['margin']['no_rival']} with no rival)" if d["margin"].get("no_rival") else ""),
        f"  {'mask area (px)':<22}{dist('mask_area', '.0f')}",
        f"  {'masks per image':<22}mean {d['masks_per_image']['mean'] or 0:.1f}",
        f"  {'images/s':<22}{stats['images_per_second']:.2f} ({stats['wall_seconds']:.1f} s wall)",
    ]
    if stats["timings"]:
        lines.append(f"  {'stage seconds':<22}" + ", ".join(f"{k} {v:.1f}" for k, v in stats["timings"].items()))
    drops = stats["drops"]
    lines.append(f"  {'dropped':<22}{sum(drops.values())}")
    lines += [f"    {reason:<20}{n}" for reason, n in sorted(drops.items(), key=lambda kv: -kv[1])]
    if stats["top_nouns"]:
        lines.append("  top nouns")
        width = max(len(n) for n, _ in stats["top_nouns"])
        lines += [f"    {noun:<{width}}  {n}" for noun, n in stats["top_nouns"]]
    return "\n".join(lines)
