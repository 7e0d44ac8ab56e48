"""Curation: a new shard set in the same schema, keeping only the pairs that pass the filters.

Two streaming passes: the first reads the pairs tables to learn per-noun counts and, for `max_per_noun`, each
noun's K best pairs; the second rewrites shard by shard. The input run is only read, never changed.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml

from mining.records import REFINED
from mining.schemas import STATUS_VERSION
from mining.sinks.guard import CURATED, WriteRefused, check_folder_output, run_inputs
from mining.sinks.layout import clear_output, shard_file, status_file
from mining.sinks.lease import OutputLease
from mining.sinks.manifest import assemble_manifest, measured_throughput, write_manifest
from mining.sinks.reader import iter_pair_batches, pairs_files, read_manifest, read_shard_documents, shard_files
from mining.sinks.writer import refined_pairs, write_shard_files
from mining.sources.uris import shard_stem
from mining.storage import Location, Where

CURATED_OUT = "curated_out"   # the drop reason of an image whose pairs were all filtered away


@dataclass
class CurationFilters:
    min_similarity: float | None = None
    min_margin: float | None = None
    min_noun_count: int | None = None
    max_per_noun: int | None = None
    nouns_allow: list[str] | None = None
    nouns_deny: list[str] = field(default_factory=list)
    synonyms: dict[str, str] = field(default_factory=dict)   # synonym -> canonical noun
    drop_refined: bool = False   # drop the pairs whose entity came from captions.refine's caption
    audit_deny: list[str] = field(default_factory=list)   # nouns an audit estimated below --min-precision

    def __post_init__(self) -> None:
        """Out-of-range thresholds are refused like config values (a similarity above 1 would keep nothing)."""
        bounds = {"min_similarity": (-1.0, 1.0, "a cosine similarity"),
                  "min_margin": (0.0, 2.0, "a difference of cosine similarities")}
        for name, (low, high, what) in bounds.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ValueError(f"--{name.replace('_', '-')} must be in [{low:g}, {high:g}] ({what}), got {value:g}")

    def canonical(self, noun: str) -> str:
        return self.synonyms.get(noun, noun)

    def rejection(self, noun: str, similarity: float, margin: float | None, refined: bool = False) -> str | None:
        """The first filter that rejects one pair alone (noun already canonical; `refined`: its entity came from
        a refined caption), or None when it passes."""
        if self.drop_refined and refined:
            return "drop_refined"
        if self.min_similarity is not None and similarity < self.min_similarity:
            return "min_similarity"
        if self.min_margin is not None and margin is not None and margin < self.min_margin:   # None: no rival
            return "min_margin"
        if self.nouns_allow is not None and noun not in self.nouns_allow:
            return "nouns_allow"
        if noun in self.audit_deny:
            return "audit"
        return "nouns_deny" if noun in self.nouns_deny else None

    def pair_passes(self, noun: str, similarity: float, margin: float | None, refined: bool = False) -> bool:
        return self.rejection(noun, similarity, margin, refined) is None

    def active(self) -> dict[str, Any]:
        """The filters that were set, for summaries."""
        return {k: v for k, v in asdict(self).items() if v is not False and v not in (None, [], {})}

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for name in ("drop_refined", "audit_deny"):   # added later: unset, a curation is recorded and hashed as before
            if not doc[name]:
                doc.pop(name)
        return doc

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def read_noun_list(path: str) -> list[str]:
    """One noun per line; blank lines and '#' comments ignored."""
    nouns = [line.split("#", 1)[0].strip().lower() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return sorted({n for n in nouns if n})


def read_synonyms(path: str) -> dict[str, str]:
    """YAML mapping of canonical noun -> list of synonyms; returns synonym -> canonical."""
    tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(tree, dict) or not all(isinstance(v, list) for v in tree.values()):
        raise ValueError(f"--merge-synonyms {path}: expected a YAML mapping 'canonical: [synonym, ...]'")
    mapping: dict[str, str] = {}
    for canonical, synonyms in tree.items():
        for synonym in synonyms:
            if mapping.get(str(synonym).lower(), str(canonical).lower()) != str(canonical).lower():
                raise ValueError(f"--merge-synonyms {path}: {synonym!r} is listed under two canonical nouns")
            mapping[str(synonym).lower()] = str(canonical).lower()
    return mapping


PairId = tuple[float, str, str, int]   # (similarity, shard, key, mask_index): a total order for ties


class _Plan:
    """What pass 1 learnt: surviving counts per noun, and each capped noun's weakest admitted pair."""

    def __init__(self, filters: CurationFilters) -> None:
        self.filters = filters
        self.counts: Counter[str] = Counter()
        self.best: dict[str, list[PairId]] = defaultdict(list)

    def observe(self, noun: str, pair: PairId) -> None:
        self.counts[noun] += 1
        k = self.filters.max_per_noun
        if k is not None:
            heap = self.best[noun]
            if len(heap) < k:
                heapq.heappush(heap, pair)
            elif pair > heap[0]:
                heapq.heapreplace(heap, pair)

    def rejection(self, noun: str, pair: PairId) -> str | None:
        """The filter over the whole output (counts, caps) that rejects a pair passing the pair filters."""
        f = self.filters
        if f.min_noun_count is not None and self.counts[noun] < f.min_noun_count:
            return "min_noun_count"
        if f.max_per_noun is not None and len(self.best[noun]) == f.max_per_noun and pair < self.best[noun][0]:
            return "max_per_noun"
        return None


def _refined_captions(origin: Location) -> dict[tuple[str, str], set[int]]:
    """(shard, key) -> the indices of its refined captions: the pairs table has no provenance column (outputs
    without refinement keep their bytes), so --drop-refined reads it from the records."""
    refined = {}
    for shard in shard_files(origin):
        for record, _ in read_shard_documents(shard):
            sources = record.get("caption_sources", [])
            if REFINED in sources:
                refined[(shard_stem(shard.uri), record["key"])] = {i for i, s in enumerate(sources) if s == REFINED}
    return refined


def _is_refined(record: dict[str, Any], pair: dict[str, Any]) -> bool:
    sources = record.get("caption_sources", [])
    return bool(sources) and sources[record["entities"][pair["entity_index"]]["caption_index"]] == REFINED


def _plan(origin: Location, filters: CurationFilters) -> _Plan:
    plan = _Plan(filters)
    refined = _refined_captions(origin) if filters.drop_refined else {}
    columns = ["shard", "key", "mask_index", "noun", "similarity", "margin", "caption_index"]
    for pairs in pairs_files(origin):
        for batch in iter_pair_batches(pairs, columns):
            for row in batch.to_pylist():
                noun = filters.canonical(row["noun"])
                from_refined = row["caption_index"] in refined.get((row["shard"], row["key"]), ())
                if filters.pair_passes(noun, row["similarity"], row["margin"], from_refined):
                    plan.observe(noun, (row["similarity"], row["shard"], row["key"], row["mask_index"]))
    return plan


def mining_origin(input_uri: str, source: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the mining output, its totals) that `input_uri` (with manifest `source`) descends from: itself, or
    what its own curation lineage recorded (curated outputs may be curated again)."""
    lineage = source.get("lineage")
    if lineage is None:
        return input_uri, source["totals"]
    if "mining_output" in lineage:
        return lineage["mining_output"], lineage["mining_totals"]
    return lineage["input"], lineage.get("input_totals", source["totals"])   # curated before lineage said it


def _input_indices(origin: Location, stem: str) -> dict[str, int]:
    """key -> position in the input shard, from the input's status table (absent: record order is used)."""
    status = status_file(origin, stem)
    if not status.exists():
        return {}
    with status.open_random() as f:
        table = pq.read_table(f, columns=["key", "index"])
    return dict(zip(table.column("key").to_pylist(), table.column("index").to_pylist()))


def _status_row(key: str, index: int, kept: int, rejected: Counter[str]) -> dict[str, Any]:
    detail = None if kept else "pairs filtered by " + ", ".join(f"{name} ({n})" for name, n in rejected.most_common())
    return {"schema_version": STATUS_VERSION, "key": key, "index": index,
            "status": "kept" if kept else CURATED_OUT, "detail": detail, "pairs": kept}


def curate(input_uri: Where, output: Where, filters: CurationFilters, overwrite: bool = False) -> dict[str, Any]:
    """Write the curated copy of `input_uri` to `output`; returns its manifest.

    Each curated shard gets a status table: every record curate read, kept or `curated_out` with the filters
    that removed its pairs. The manifest keeps the mining run's throughput and stage timings (curate's own
    time is `lineage.curate_seconds`) and names the mining run and its totals, so that numbers over the
    curated output can still speak of the images that were mined.

    `output` passes the write guard (`mining.sinks.guard`): a new or empty folder, or a curated output, which is
    replaced (another curation's only with `overwrite`), under the output's lease."""
    origin, output = Location.of(input_uri), Location.of(output)
    if origin.comparable() == output.comparable():
        raise WriteRefused(f"{output} is the input run: curate writes a new shard set, OUTPUT must differ from "
                           f"INPUT")
    start = time.perf_counter()
    source = read_manifest(origin)
    existing = check_folder_output(output, CURATED, run_inputs(origin), overwrite)
    # an absolute input, so that the lineage can be followed from any working directory (ovmine eval does)
    absolute_input = origin.absolute().uri
    config_hash = hashlib.sha256(f"{source['config_hash']}:{filters.digest()}".encode()).hexdigest()[:16]
    with OutputLease(output, f"curate {config_hash}"):
        if existing is not None:
            _refuse_another_curation(output, absolute_input, config_hash, overwrite)
            clear_output(output)
        plan = _plan(origin, filters)
        stems = _write_curated_shards(origin, output, filters, plan, config_hash)
        mining_output, mining_totals = mining_origin(absolute_input, source)
        lineage = {"input": absolute_input, "input_config_hash": source["config_hash"], "filters": filters.to_json(),
                   "input_totals": source["totals"], "mining_output": mining_output, "mining_totals": mining_totals,
                   "curate_seconds": round(time.perf_counter() - start, 3)}
        measured = measured_throughput(source) or {"wall_seconds": 0.0, "images_per_second": 0.0,
                                                   "mined_images": 0, "throughput_of": None}
        manifest = assemble_manifest(output, stems, source["config"], config_hash, source["models"],
                                     time.perf_counter() - start, lineage=lineage, measured=measured,
                                     timings=source["timings"])
        write_manifest(output, manifest)
    return manifest


def _refuse_another_curation(output: Location, absolute_input: str, config_hash: str, overwrite: bool) -> None:
    """A rerun of the same curation (or one whose manifest is damaged) is redone; another one needs --overwrite."""
    try:
        earlier = read_manifest(output)
    except (OSError, ValueError):
        return
    same = earlier.get("config_hash") == config_hash and earlier.get("lineage", {}).get("input") == absolute_input
    if not same and not overwrite:
        raise WriteRefused(f"--output {output} holds another curation (of {earlier.get('lineage', {}).get('input')}, "
                           f"config {earlier.get('config_hash')}): choose a new folder, or pass --overwrite to "
                           f"replace it")


def _write_curated_shards(origin: Location, output: Location, filters: CurationFilters, plan: _Plan,
                          config_hash: str) -> list[str]:
    """Pass 2: each input shard's kept records, pairs, status and marker; returns the stems written."""
    stems = []
    for shard in shard_files(origin):
        stem = shard_stem(shard.uri)
        indices = _input_indices(origin, stem)
        kept_records, nouns, dropped, status, refined = [], Counter(), 0, [], 0
        for order, (record, image) in enumerate(read_shard_documents(shard)):
            pairs, rejected = [], Counter()
            for pair in record["pairs"]:
                noun = filters.canonical(pair["noun"])
                # compare at the pairs table's float32 precision, as pass 1 did
                similarity = float(np.float32(pair["similarity"]))
                margin = None if pair["margin"] is None else float(np.float32(pair["margin"]))
                pid = (similarity, stem, record["key"], pair["mask_index"])
                why = filters.rejection(noun, similarity, margin, _is_refined(record, pair)) \
                    or plan.rejection(noun, pid)
                if why is None:
                    pairs.append({**pair, "noun": noun})
                else:
                    rejected[why] += 1
            status.append(_status_row(record["key"], indices.get(record["key"], order), len(pairs), rejected))
            if pairs:
                kept_records.append(({**record, "pairs": pairs}, image))
                nouns.update(p["noun"] for p in pairs)
                refined += refined_pairs(record.get("caption_sources", []),
                                         (record["entities"][p["entity_index"]]["caption_index"] for p in pairs))
            else:
                dropped += 1
        marker = {"input": shard_file(origin, stem).uri, "name": stem, "config_hash": config_hash,
                  "written_by": "curate",
                  "images_in": len(kept_records) + dropped, "images_with_pairs": len(kept_records),
                  "pairs": sum(nouns.values()), "unique_nouns": len(nouns),
                  "drops": {CURATED_OUT: dropped} if dropped else {}, "errors": [], "timings": {},
                  "nouns": dict(nouns.most_common())} | ({"refined_pairs": refined} if refined else {})
        write_shard_files(output, stem, kept_records, marker,
                          status=sorted(status, key=lambda row: row["index"]))
        stems.append(stem)
    return stems
