"""What "the same output" means after a resume, a retry or a lost node: the same shards, records, masks,
nouns and pairs, exactly; similarities and margins equal up to float noise. A stage rerun in another process,
batch or thread count may sum in another order, so embeddings and the scores derived from them can differ in
the last bits (a margin of 0.04438704 vs 0.04438701 was seen): that is not a different result."""
from __future__ import annotations

import json
import math
from typing import Any

from mining.sinks.reader import iter_records, read_pairs

REL, ABS = 1e-5, 1e-6     # float32 has ~7 significant digits; kernels may differ in the last one or two


def output_snapshot(output: str) -> dict[str, Any]:
    """Every record and every pairs row of an output, in a canonical order, as plain JSON values."""
    records = sorted((json.loads(json.dumps({"shard": r.shard, "key": r.key, "captions": r.captions,
                                             "entities": [e.to_json() for e in r.entities],
                                             "masks": [m.__dict__ for m in r.masks],
                                             "pairs": [p.__dict__ for p in r.pairs]}))
                      for r in iter_records(output)), key=lambda d: (d["shard"], d["key"]))
    table = read_pairs(output).sort_by([("shard", "ascending"), ("key", "ascending"), ("mask_index", "ascending")])
    return {"records": records, "pairs": table.to_pylist()}


def differences(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Where two JSON-like values differ: floats beyond REL/ABS, anything else at all."""
    if isinstance(actual, float) or isinstance(expected, float):
        if isinstance(actual, (int, float)) and isinstance(expected, (int, float)) \
                and math.isclose(actual, expected, rel_tol=REL, abs_tol=ABS):
            return []
        return [f"{path}: {actual!r} != {expected!r}"]
    if isinstance(actual, dict) and isinstance(expected, dict):
        if actual.keys() != expected.keys():
            return [f"{path}: keys {sorted(actual)} != {sorted(expected)}"]
        return [d for k in actual for d in differences(actual[k], expected[k], f"{path}.{k}")]
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            return [f"{path}: {len(actual)} items != {len(expected)}"]
        return [d for i, (a, e) in enumerate(zip(actual, expected)) for d in differences(a, e, f"{path}[{i}]")]
    return [] if actual == expected else [f"{path}: {actual!r} != {expected!r}"]


def assert_same_output(actual: str, expected: str) -> None:
    diff = differences(output_snapshot(actual), output_snapshot(expected))
    assert not diff, f"{len(diff)} difference(s), first: " + "; ".join(diff[:5])
