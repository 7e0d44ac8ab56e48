"""Statistics of a mining output, streamed over its pairs parquet files in bounded memory.

Rows are read in record batches of a few columns; distributions go into fixed histogram bins, so memory
depends on the vocabulary and the largest shard, never on the total number of pairs. Run-level figures
(images in, drops, stage time) come from the manifest; for a run still in progress (or interrupted) from the
markers of the shards committed so far. A curated output speaks of the images its mining run read, and of
that run's throughput, never of curate's own run time as if it were mining.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mining.postrun.curate import CURATED_OUT
from mining.sinks.commits import committed_markers
from mining.sinks.layout import manifest_file
from mining.sinks.manifest import aggregate
from mining.sinks.reader import iter_pair_batches, pairs_files, read_manifest
from mining.storage import Where

COLUMNS = ["key", "noun", "similarity", "margin", "area", "image_masks"]
TAIL_BUCKETS = (("1", 1, 1), ("2-9", 2, 9), ("10-99", 10, 99), ("100+", 100, None))
NOUN_SIMILARITY_EDGES = np.linspace(-1, 1, 41)   # 0.05 wide: per-noun histograms stay small for a big vocabulary


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
        self._noun_rows: dict[str, int] = {}   # noun -> row of the per-noun similarity tables
        self._noun_counts = np.zeros((64, len(NOUN_SIMILARITY_EDGES) - 1), np.int64)
        self._noun_sums = np.zeros(64)
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
            similarity = np.asarray(cols["similarity"], np.float64)
            self.similarity.add(similarity)
            self._add_noun_similarity(batch.column("noun"), similarity)
            margins = [m for m in cols["margin"] if m is not None]
            self.no_rival += len(cols["margin"]) - len(margins)
            self.margin.add(np.asarray(margins, np.float64))
            self.area.add(np.asarray(cols["area"], np.float64))
            per_image.update(cols["key"])
            masks.update(zip(cols["key"], cols["image_masks"]))
        self.pairs_per_image.update(per_image.values())
        self.masks_per_image.update(masks.values())

    def _add_noun_similarity(self, nouns: pa.Array, similarity: np.ndarray) -> None:
        """Each noun's similarity histogram, for a whole batch at once: the batch's nouns dictionary-encoded by
        Arrow, their rows in one growing [nouns, bins] table, one scatter-add (no pass per noun)."""
        if len(nouns) == 0:
            return
        encoded = nouns.dictionary_encode()
        rows = np.fromiter((self._noun_row(noun) for noun in encoded.dictionary.to_pylist()), np.int64)
        which = rows[encoded.indices.to_numpy(zero_copy_only=False)]
        bins = len(NOUN_SIMILARITY_EDGES) - 1
        where = np.clip(np.searchsorted(NOUN_SIMILARITY_EDGES, similarity, side="right") - 1, 0, bins - 1)
        np.add.at(self._noun_counts, (which, where), 1)
        self._noun_sums += np.bincount(which, weights=similarity, minlength=len(self._noun_sums))

    def _noun_row(self, noun: str) -> int:
        row = self._noun_rows.setdefault(noun, len(self._noun_rows))
        if row == len(self._noun_counts):   # grow by doubling: amortised O(1) per new noun
            self._noun_counts = np.concatenate([self._noun_counts, np.zeros_like(self._noun_counts)])
            self._noun_sums = np.concatenate([self._noun_sums, np.zeros_like(self._noun_sums)])
        return row

    def noun_similarity(self, noun: str) -> Histogram:
        hist = Histogram(NOUN_SIMILARITY_EDGES)
        row = self._noun_rows[noun]
        hist.counts = self._noun_counts[row].copy()
        hist.n, hist.total = int(hist.counts.sum()), float(self._noun_sums[row])
        return hist

    def long_tail(self) -> dict[str, int]:
        counts = np.fromiter(self.nouns.values(), dtype=np.int64, count=len(self.nouns))
        return {name: int(((counts >= lo) & ((counts <= hi) if hi else True)).sum()) for name, lo, hi in TAIL_BUCKETS}

    def per_noun(self, top_k: int) -> list[dict[str, Any]]:
        """The `top_k` most frequent nouns with their similarity distributions (0.05-wide bins over [-1, 1])."""
        total = sum(self.nouns.values())
        rows = []
        for noun, n in self.nouns.most_common(top_k):
            hist = self.noun_similarity(noun)
            rows.append({"noun": noun, "pairs": n, "share": n / total, "similarity_mean": hist.total / hist.n,
                         "similarity_p50": hist.quantile(0.5), "similarity_counts": [int(c) for c in hist.counts]})
        return rows


def _per_image(counter: Counter[int]) -> dict[str, Any]:
    images = sum(counter.values())
    total = sum(k * v for k, v in counter.items())
    return {"images": images, "mean": total / images if images else None,
            "values": {str(k): counter[k] for k in sorted(counter)}}


def in_progress_message(committed: int) -> str:
    return (f"run in progress or interrupted: {committed} shard{'s' if committed != 1 else ''} committed so far, "
            f"no manifest yet; rerun the mine command to finish it")


def load_run(output: Where) -> tuple[dict[str, Any], str | None]:
    """(the output's manifest, None), or for a run in progress (committed shards, no manifest yet) a
    provisional one built from the committed markers and the message that says so. An output with neither
    raises read_manifest's error naming the case."""
    if not manifest_file(output).exists():
        markers = committed_markers(output)
        if markers:
            hashes = sorted({m["config_hash"] for m in markers.values()})
            return ({"config": None, "config_hash": hashes[0] if len(hashes) == 1 else "+".join(hashes),
                     "models": None, "shards": list(markers.values()), **aggregate(list(markers.values())),
                     "wall_seconds": None, "images_per_second": None, "mined_images": 0, "throughput_of": None},
                    in_progress_message(len(markers)))
    return read_manifest(output), None


def _throughput(manifest: dict[str, Any]) -> dict[str, Any]:
    """images/s with what it is of: this run, an earlier run (this one mined nothing), or the mining run of
    a curated output; None when no run measured one."""
    lineage = manifest.get("lineage")
    measured = manifest.get("mined_images")
    if not manifest["images_per_second"] or measured == 0 or (lineage and "mined_images" not in manifest):
        # in progress, nothing mined, or curated before curate carried the mining figures: curate's own time
        # is not a mining throughput
        return {"images_per_second": None, "wall_seconds": None, "mined_images": 0, "of": None}
    if lineage:
        of = f"the mining run {lineage.get('mining_output', lineage['input'])}"
    elif manifest.get("throughput_of") not in (None, manifest["created"]):
        of = f"the run of {manifest['throughput_of']} (the last run mined nothing)"
    else:
        of = "this run"
    return {"images_per_second": manifest["images_per_second"], "wall_seconds": manifest["wall_seconds"],
            "mined_images": measured if measured is not None else manifest["totals"]["images_in"], "of": of}


def _curated_from(manifest: dict[str, Any]) -> dict[str, Any] | None:
    lineage = manifest.get("lineage")
    if lineage is None:
        return None
    mining = lineage.get("mining_totals") or lineage.get("input_totals") or manifest["totals"]
    return {"input": lineage["input"], "mining_output": lineage.get("mining_output", lineage["input"]),
            "mining_totals": mining, "input_totals": lineage.get("input_totals"),
            "filters": {k: v for k, v in lineage["filters"].items() if v not in (None, [], {})},
            "curate_seconds": lineage.get("curate_seconds")}


def _images_and_drops(manifest: dict[str, Any], curated: dict[str, Any] | None) -> tuple[int, dict[str, int]]:
    """Images in and drops by reason. For a curated output: the mining run's images, its drops, and as
    `curated_out` every image that had pairs there and has none here, so images in = with pairs + drops."""
    totals = manifest["totals"]
    if curated is None:
        return totals["images_in"], totals["drops"]
    mining = curated["mining_totals"]
    drops = Counter({k: v for k, v in mining["drops"].items() if k != CURATED_OUT})
    drops[CURATED_OUT] = mining["images_in"] - totals["images_with_pairs"] - sum(drops.values())
    return mining["images_in"], dict(sorted((k, v) for k, v in drops.items() if v))


def compute_stats(output: Where, top_k: int = 20,
                  keep_pair_stats: bool = False) -> dict[str, Any]:
    """The statistics of `output` (see format_stats). `keep_pair_stats`: also return the PairStats under
    "_pair_stats" (every noun's count, for comparisons); it is not JSON."""
    manifest, progress = load_run(output)
    stats = PairStats()
    for pairs in pairs_files(output):
        stats.add_file(iter_pair_batches(pairs, COLUMNS))
    totals = manifest["totals"]
    pairs = sum(stats.nouns.values())
    curated = _curated_from(manifest)
    images_in, drops = _images_and_drops(manifest, curated)
    throughput = _throughput(manifest)
    result = {
        "output": str(output),
        "config_hash": manifest["config_hash"],
        "state": "in_progress" if progress else "finished",
        "in_progress": progress,
        "shards": len(manifest["shards"]),
        "images_in": images_in,
        "images_with_pairs": totals["images_with_pairs"],
        "pairs": pairs,
        "pairs_per_image": pairs / totals["images_with_pairs"] if totals["images_with_pairs"] else 0.0,
        "unique_nouns": len(stats.nouns),
        "top_nouns": [[noun, n] for noun, n in stats.nouns.most_common(top_k)],
        "nouns": stats.per_noun(top_k),
        "long_tail": stats.long_tail(),
        "distributions": {
            "similarity": stats.similarity.to_json(),
            "margin": stats.margin.to_json() | {"no_rival": stats.no_rival},
            "mask_area": stats.area.to_json(),
            "pairs_per_image": _per_image(stats.pairs_per_image),
            "masks_per_image": _per_image(stats.masks_per_image),
        },
        "drops": drops,
        "entity_fallbacks": manifest["totals"].get("entity_fallbacks", {}),
        "refined_pairs": manifest["totals"].get("refined_pairs", 0),   # from captions.refine's captions
        "timings": manifest["timings"],
        "wall_seconds": throughput["wall_seconds"],
        "images_per_second": throughput["images_per_second"],
        "throughput": throughput,
        "curated_from": curated,
        "failed_shards": manifest.get("failed_shards", []),
        "lineage": manifest.get("lineage"),
        "config": manifest["config"],
        "models": manifest["models"],
    }
    if keep_pair_stats:
        result["_pair_stats"] = stats
    return result


def _filters_text(filters: dict[str, Any]) -> str:
    parts = []
    for name, value in filters.items():
        if name == "synonyms":
            value = f"{len(value)} merged"
        elif isinstance(value, list):
            value = f"{len(value)} nouns"
        elif value is True:   # a switch: its name says it
            parts.append(name)
            continue
        parts.append(f"{name} {value}")
    return ", ".join(parts) or "no filters"


def throughput_text(stats: dict[str, Any]) -> str:
    t = stats["throughput"]
    if t["images_per_second"] is None:
        if stats["in_progress"]:
            return "- (not measured until the run finishes)"
        if stats["curated_from"]:
            return "- (the mining run's throughput was not recorded; curate's time is not a mining throughput)"
        return "- (no run that wrote this output mined any image)"
    return (f"{t['images_per_second']:.2f} ({t['mined_images']} images in {t['wall_seconds']:.1f} s wall, "
            f"{t['of']})")


def curated_text(stats: dict[str, Any]) -> str:
    c = stats["curated_from"]
    m, before = c["mining_totals"], c["input_totals"] or c["mining_totals"]
    seconds = f" in {c['curate_seconds']:.1f} s" if c.get("curate_seconds") is not None else ""
    return (f"curated from {c['input']}: images in {m['images_in']}, with pairs {before['images_with_pairs']}, "
            f"pairs {before['pairs']} -> kept {stats['images_with_pairs']} images, {stats['pairs']} pairs "
            f"({_filters_text(c['filters'])}){seconds}")


def refined_text(stats: dict[str, Any]) -> list[str]:
    """The pairs whose noun only a refined caption named (captions.refine); no line when there are none."""
    refined = stats.get("refined_pairs", 0)
    if not refined:
        return []
    share = refined / stats["pairs"] if stats["pairs"] else 0.0
    return [f"  {'from refined captions':<22}{refined} pairs ({share:.0%}: nouns only the refined caption named)"]


def split_timings(timings: dict[str, float]) -> dict[str, dict[str, float]]:
    """The manifest's timings by what they measure: stage work summed over samples, the run's wall time
    (Ray start-up, model loading, mining: they add up to its wall time), and each stage's model loading."""
    groups: dict[str, dict[str, float]] = {"stage seconds": {}, "run wall seconds": {}, "model loading s": {}}
    for name, seconds in timings.items():
        if name.startswith("wall_"):
            groups["run wall seconds"][name.removeprefix("wall_").replace("_", " ")] = seconds
        elif name.startswith("setup_"):
            groups["model loading s"][name.removeprefix("setup_")] = seconds
        else:
            groups["stage seconds"][name] = seconds
    return groups


def format_stats(stats: dict[str, Any]) -> str:
    """The terminal table."""
    d = stats["distributions"]

    def dist(name: str, fmt: str = ".3f") -> str:
        h = d[name]
        if not h["n"]:
            return "-"
        return f"mean {h['mean']:{fmt}}  p10 {h['p10']:{fmt}}  p50 {h['p50']:{fmt}}  p90 {h['p90']:{fmt}}"

    lines = [f"{stats['output']}  (config {stats['config_hash']})"]
    if stats["in_progress"]:
        lines.append(f"  {stats['in_progress']}")
    if stats["curated_from"]:
        lines.append(f"  {curated_text(stats)}")
    lines += [
        f"  {'images in':<22}{stats['images_in']}" + ("  (read by the mining run)" if stats["curated_from"] else ""),
        f"  {'images with pairs':<22}{stats['images_with_pairs']}",
        f"  {'pairs':<22}{stats['pairs']}",
        *refined_text(stats),
        f"  {'pairs per image':<22}{stats['pairs_per_image']:.2f}",
        f"  {'unique nouns':<22}{stats['unique_nouns']}",
        f"  {'nouns by pair count':<22}" + ", ".join(f"{k}: {v}" for k, v in stats["long_tail"].items()),
        f"  {'similarity':<22}{dist('similarity')}",
        f"  {'margin (regret)':<22}{dist('margin')}"
        + (f" ({d['margin']['no_rival']} with no rival)" if d["margin"].get("no_rival") else ""),
        f"  {'mask area (px)':<22}{dist('mask_area', '.0f')}",
        f"  {'masks per image':<22}mean {d['masks_per_image']['mean'] or 0:.1f}",
        f"  {'images/s':<22}{throughput_text(stats)}",
    ]
    whose = " (the mining run's)" if stats["curated_from"] else ""
    for label, group in split_timings(stats["timings"]).items():
        if group:
            lines.append(f"  {label:<22}" + ", ".join(f"{k} {v:.1f}" for k, v in group.items()) + whose)
    drops = stats["drops"]
    lines.append(f"  {'dropped':<22}{sum(drops.values())}")
    lines += [f"    {reason:<20}{n}" for reason, n in sorted(drops.items(), key=lambda kv: -kv[1])]
    if stats.get("entity_fallbacks"):
        fallbacks = stats["entity_fallbacks"]
        to = stats["config"].get("entities", {}).get("llm", {}).get("fallback", "spacy")
        lines.append(f"  {'LLM answers unused':<22}{sum(fallbacks.values())} captions ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(fallbacks.items(), key=lambda kv: -kv[1]))
                     + (", parsed by spaCy instead)" if to == "spacy" else ", no entities from them)"))
    if stats["failed_shards"]:
        lines.append(f"  {'failed shards':<22}{len(stats['failed_shards'])} (not committed; rerun the mine "
                     f"command to retry them)")
    if stats["top_nouns"]:
        lines.append("  top nouns")
        width = max(len(n) for n, _ in stats["top_nouns"])
        lines += [f"    {noun:<{width}}  {n}" for noun, n in stats["top_nouns"]]
    return "\n".join(lines)
