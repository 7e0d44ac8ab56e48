"""Curation: a new shard set in the same schema, keeping only the pairs that pass the filters.

Two streaming passes: the first reads the pairs tables to learn per-noun counts and, for `max_per_noun`, each
noun's K best pairs; the second rewrites shard by shard. The input run is only read, never changed.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mining.sinks.layout import shard_uri
from mining.sinks.manifest import assemble_manifest, write_manifest
from mining.sinks.reader import iter_pair_batches, pairs_files, read_manifest, read_shard_documents, shard_files
from mining.sinks.writer import write_shard_files
from mining.sources.uris import shard_stem
from mining.storage import S3Options, is_s3

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

    def canonical(self, noun: str) -> str:
        return self.synonyms.get(noun, noun)

    def pair_passes(self, noun: str, similarity: float, margin: float | None) -> bool:
        """The filters that look at one pair alone (noun already canonical)."""
        if self.min_similarity is not None and similarity < self.min_similarity:
            return False
        if self.min_margin is not None and margin is not None and margin < self.min_margin:   # None: no rival
            return False
        if self.nouns_allow is not None and noun not in self.nouns_allow:
            return False
        return noun not in self.nouns_deny

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


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

    def keeps(self, noun: str, pair: PairId) -> bool:
        f = self.filters
        if f.min_noun_count is not None and self.counts[noun] < f.min_noun_count:
            return False
        if f.max_per_noun is not None and len(self.best[noun]) == f.max_per_noun and pair < self.best[noun][0]:
            return False
        return True


def _plan(input_uri: str, filters: CurationFilters, s3: S3Options | None) -> _Plan:
    plan = _Plan(filters)
    columns = ["shard", "key", "mask_index", "noun", "similarity", "margin"]
    for uri in pairs_files(input_uri, s3):
        for batch in iter_pair_batches(uri, columns, s3):
            for row in batch.to_pylist():
                noun = filters.canonical(row["noun"])
                if filters.pair_passes(noun, row["similarity"], row["margin"]):
                    plan.observe(noun, (row["similarity"], row["shard"], row["key"], row["mask_index"]))
    return plan


def curate(input_uri: str, output: str, filters: CurationFilters, s3: S3Options | None = None) -> dict[str, Any]:
    """Write the curated copy of `input_uri` to `output`; returns its manifest."""
    if (input_uri.rstrip("/") if is_s3(input_uri) else os.path.realpath(input_uri)) == \
            (output.rstrip("/") if is_s3(output) else os.path.realpath(output)):
        raise ValueError("curate writes a new shard set: OUTPUT must differ from INPUT")
    start = time.perf_counter()
    source = read_manifest(input_uri, s3)
    plan = _plan(input_uri, filters, s3)
    config_hash = hashlib.sha256(f"{source['config_hash']}:{filters.digest()}".encode()).hexdigest()[:16]
    stems = []
    for uri in shard_files(input_uri, s3):
        stem = shard_stem(uri)
        kept_records, nouns, dropped = [], Counter(), 0
        for record, image in read_shard_documents(uri, s3):
            pairs = []
            for pair in record["pairs"]:
                noun = filters.canonical(pair["noun"])
                # compare at the pairs table's float32 precision, as pass 1 did
                similarity = float(np.float32(pair["similarity"]))
                margin = None if pair["margin"] is None else float(np.float32(pair["margin"]))
                pid = (similarity, stem, record["key"], pair["mask_index"])
                if filters.pair_passes(noun, similarity, margin) and plan.keeps(noun, pid):
                    pairs.append({**pair, "noun": noun})
            if pairs:
                kept_records.append(({**record, "pairs": pairs}, image))
                nouns.update(p["noun"] for p in pairs)
            else:
                dropped += 1
        marker = {"input": shard_uri(input_uri, stem), "name": stem, "config_hash": config_hash,
                  "images_in": len(kept_records) + dropped, "images_with_pairs": len(kept_records),
                  "pairs": sum(nouns.values()), "unique_nouns": len(nouns),
                  "drops": {CURATED_OUT: dropped} if dropped else {}, "errors": [], "timings": {},
                  "nouns": dict(nouns.most_common())}
        write_shard_files(output, stem, kept_records, marker, s3)
        stems.append(stem)
    # an absolute input, so that the lineage can be followed from any working directory (ovmine eval does)
    lineage = {"input": input_uri if is_s3(input_uri) else os.path.abspath(input_uri),
               "input_config_hash": source["config_hash"], "filters": asdict(filters),
               "input_totals": source["totals"]}
    manifest = assemble_manifest(output, stems, source["config"], config_hash, source["models"],
                                 time.perf_counter() - start, s3, lineage=lineage)
    write_manifest(output, manifest, s3)
    return manifest
