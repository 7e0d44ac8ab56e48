"""Check a finished output against schemas/ and against itself: every record validates, the pairs tables have
the pairs schema and agree with the records, every sample's fate is in the status tables, each shard's stats
file agrees with its marker, and the manifest's counts add up. An output is its committed shards (those with a
_done marker); the manifest must list them all."""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from typing import Any

import pyarrow.parquet as pq

from mining.schemas import SchemaError, validate, validate_pairs_table, validate_table
from mining.sinks.commits import read_marker
from mining.sinks.guard import CURATED, folder_kind
from mining.sinks.layout import (dropped_file, manifest_file, marker_file, pairs_file, shard_file, stats_file,
                                 status_file)
from mining.sinks.reader import committed_stems, read_manifest, read_shard_documents
from mining.storage import Location, Where


def _status_problems(output: Where, shard: dict[str, Any]) -> list[str]:
    """A mined shard's status table has one row per input sample and agrees with its counts."""
    status = status_file(output, shard["name"])
    if not status.exists():
        return [f"shard {shard['name']} has no status table ({status})"]
    with status.open_random() as f:
        table = pq.read_table(f)
    validate_table("status", table)
    fates = Counter(table.column("status").to_pylist())
    kept = fates.pop("kept", 0)
    problems = []
    if table.num_rows != shard["images_in"]:
        problems.append(f"shard {shard['name']}: status has {table.num_rows} samples, marker says {shard['images_in']}")
    if kept != shard["images_with_pairs"] or dict(fates) != shard["drops"]:
        problems.append(f"shard {shard['name']}: status says {kept} kept and drops {dict(sorted(fates.items()))}, "
                        f"marker says {shard['images_with_pairs']} and {shard['drops']}")
    return problems + _dropped_problems(output, shard["name"], table)


def _dropped_problems(output: Where, name: str, status) -> list[str]:
    """A shard's dropped examples (absent when it has none) have their schema and the fate its status gives."""
    uri = dropped_file(output, name)
    if not uri.exists():
        return []
    doc = json.loads(uri.read())
    validate("dropped", doc)
    fate = {row["index"]: (row["key"], row["status"]) for row in status.select(["index", "key", "status"]).to_pylist()}
    return [f"shard {name}: {uri} says sample {e['index']} ({e['key']}) was dropped for {e['reason']}, status says "
            f"{fate.get(e['index'], ('-', 'nothing'))[1]}"
            for e in doc["samples"] if fate.get(e["index"]) != (e["key"], e["reason"])]


# what a shard's stats file repeats from its marker (stage_seconds is the marker's timings)
_STATS_FROM_MARKER = ("name", "input", "config_hash", "limit", "images_in", "images_with_pairs", "pairs", "drops",
                      "errors")


def _stats_problems(output: Where, marker: dict[str, Any]) -> list[str]:
    """A mined shard's stats file exists, has its schema, and says what its marker says."""
    name, uri = marker["name"], stats_file(output, marker["name"])
    if not uri.exists():
        return [f"shard {name} has no stats file ({uri})"]
    try:
        stats = json.loads(uri.read())
    except json.JSONDecodeError as err:
        return [f"shard {name}: stats file {uri} is not JSON ({err})"]
    try:
        validate("shard_stats", stats)
    except SchemaError as err:
        return [f"shard {name}: {err}"]
    expected = {k: marker.get(k) for k in _STATS_FROM_MARKER} | {"stage_seconds": marker["timings"],
                                                                 "entity_fallbacks": marker.get("entity_fallbacks"),
                                                                 "refined_pairs": marker.get("refined_pairs")}
    differ = sorted(k for k, v in expected.items() if stats.get(k) != v)
    return [f"shard {name}: stats file says {k} {stats.get(k)!r}, marker says {expected[k]!r}" for k in differ]


def _repair_hint(output: Where) -> str:
    """The command that rewrites a damaged output: the one that wrote it, run again the same way."""
    if folder_kind(Location.of(output)) == CURATED:
        return "rerun the curate command that wrote it (it writes the curated output again)"
    return "rerun the mine command that wrote it (it rewrites what is damaged)"


def _read_checked_manifest(output: Where) -> dict[str, Any]:
    manifest = read_manifest(output)   # a missing or non-JSON manifest: its error names the file and the fix
    try:
        validate("manifest", manifest)
    except SchemaError as err:   # JSON, but not a manifest
        raise ValueError(f"{manifest_file(output)} is damaged ({str(err).splitlines()[0]}): "
                         f"{_repair_hint(output)}") from None
    return manifest


def _shard_problems(output: Where, shard: dict[str, Any], manifest: dict[str, Any]) -> tuple[list[str], int, int, int]:
    """(problems, records, pairs in records, rows in the pairs table) of one listed shard; a damaged file is a
    problem naming it and the command that repairs it, never an exception."""
    name = shard["name"]
    marker = read_marker(output, name)
    if marker is None:
        return [f"the marker {marker_file(output, name)} is damaged: {_repair_hint(output)}; shard {name} is "
                f"then mined again"], 0, 0, 0
    problems = []
    if marker["config_hash"] != manifest["config_hash"]:
        problems.append(f"shard {name} was mined with config {marker['config_hash']}")
    records = pairs_in_records = rows = 0
    current = None
    try:
        current = shard_file(output, name)
        for doc, _ in read_shard_documents(current):
            validate("record", doc)
            records += 1
            pairs_in_records += len(doc["pairs"])
        current = pairs_file(output, name)
        with current.open_random() as f:
            table = pq.read_table(f)
        if table.num_rows:
            validate_pairs_table(table)
        rows = table.num_rows
        if "lineage" not in manifest:   # a curated output keeps its images' fate and stats in its input's
            current = status_file(output, name)
            problems += _status_problems(output, shard)
            current = stats_file(output, name)
            problems += _stats_problems(output, marker)
    except (OSError, ValueError, KeyError, TypeError, tarfile.TarError) as err:
        repair = ("rerun the curate command that wrote it" if "lineage" in manifest else
                  f"remove its marker {marker_file(output, name)} and rerun the mine command, which mines shard "
                  f"{name} again")
        problems.append(f"{current} is damaged ({str(err).splitlines()[0] if str(err) else type(err).__name__}): "
                        f"{repair}")
    return problems, records, pairs_in_records, rows


def check_output(output: Where) -> dict[str, Any]:
    """Raises ValueError (or SchemaError) listing every inconsistency, each damaged file named with the command
    that repairs it; returns the figures it checked."""
    manifest = _read_checked_manifest(output)
    problems = []
    listed = {s["name"] for s in manifest["shards"]}
    committed = set(committed_stems(output))
    if committed - listed:
        problems.append(f"{len(committed - listed)} committed shard(s) missing from the manifest, e.g. "
                        f"{sorted(committed - listed)[0]}: {_repair_hint(output)}")
    if listed - committed:
        raise ValueError(f"output is inconsistent: the manifest lists {len(listed - committed)} shard(s) that are "
                         f"not committed, e.g. {sorted(listed - committed)[0]}: {_repair_hint(output)}")
    records = pairs_in_records = rows = 0
    for shard in manifest["shards"]:
        found, r, p, n = _shard_problems(output, shard, manifest)
        problems += found
        records, pairs_in_records, rows = records + r, pairs_in_records + p, rows + n
    totals = manifest["totals"]
    if totals["images_in"] != totals["images_with_pairs"] + sum(totals["drops"].values()):
        problems.append(f"images_in {totals['images_in']} != images_with_pairs {totals['images_with_pairs']} "
                        f"+ drops {sum(totals['drops'].values())}")
    if records != totals["images_with_pairs"]:
        problems.append(f"{records} records in shards but manifest says {totals['images_with_pairs']} images")
    if not (pairs_in_records == rows == totals["pairs"]):
        problems.append(f"pairs disagree: records {pairs_in_records}, parquet {rows}, manifest {totals['pairs']}")
    if problems:
        raise ValueError("output is inconsistent:\n  " + "\n  ".join(problems))
    return {"records": records, "pairs": rows, "shards": len(manifest["shards"]),
            "failed_shards": len(manifest.get("failed_shards", [])), **totals}
