"""Which input shards an output already holds, committed, and whether a rerun may reuse them.

A shard counts as done only through its `_done/<stem>.json` marker (written after its tar and parquet), so a
run killed at any point leaves either a committed shard or one that is simply mined again."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mining.sinks.layout import manifest_file, marker_file
from mining.sinks.reader import committed_stems
from mining.storage import Where


class OutputConflict(ValueError):
    """The output holds shards mined with another configuration."""


def committed_markers(output: Where, threads: int = 32) -> dict[str, dict[str, Any]]:
    """Every committed shard's marker by stem: one listing, then the markers read concurrently (on S3 each
    read is a request; sequential reads of 100k markers would take hours)."""
    stems = committed_stems(output)
    if not stems:
        return {}
    with ThreadPoolExecutor(max_workers=min(threads, len(stems))) as pool:
        docs = pool.map(lambda stem: json.loads(marker_file(output, stem).read()), stems)
        return dict(zip(stems, docs))


def covers(marker_limit: int | None, wanted: int | None) -> bool:
    """Whether a shard committed under --limit `marker_limit` (None: whole) holds what a task asks for."""
    return marker_limit is None or (wanted is not None and marker_limit >= wanted)


def reusable(markers: dict[str, dict[str, Any]], stems_and_limits: dict[str, int | None], config_hash: str,
             output: str) -> set[str]:
    """Stems whose committed shard can stand as it is: mined with this config, and holding at least what the
    task asks for (a whole shard stands for any --limit cut of it). Refuses to mix configurations."""
    foreign = sorted(stem for stem, m in markers.items() if m["config_hash"] != config_hash)
    if foreign:
        raise OutputConflict(
            f"{output} holds {len(foreign)} shard(s) mined with another config (e.g. {foreign[0]}: "
            f"{markers[foreign[0]]['config_hash']}, this run: {config_hash}); use a new --output, or --overwrite "
            f"to mine them again with this config")
    return {stem for stem, limit in stems_and_limits.items()
            if stem in markers and covers(markers[stem].get("limit"), limit)}


def refuse_foreign_leftovers(markers: dict[str, dict[str, Any]], wanted: dict[str, int | None], config_hash: str,
                             output: str) -> None:
    """--overwrite mines the planned shards again; shards of another config outside the plan would stay and
    leave an output of two configs, so that is refused before any work."""
    left = sorted(stem for stem, m in markers.items() if m["config_hash"] != config_hash and stem not in wanted)
    if left:
        raise OutputConflict(
            f"{output} holds {len(left)} shard(s) of another config that this run would not mine again (e.g. "
            f"{left[0]}); --overwrite replaces only the shards of its inputs: add their inputs, or use a new --output")


def manifest_if_current(output: Where, config_hash: str) -> dict[str, Any] | None:
    """The output's manifest when it describes exactly the committed shards (one listing and one read, not a
    read per marker: a rerun over 100k committed shards on S3 must not make 100k requests), else None."""
    try:
        manifest = json.loads(manifest_file(output).read())
    except (FileNotFoundError, OSError, json.JSONDecodeError):
        return None
    if manifest.get("config_hash") != config_hash or "failed_shards" in manifest:
        return None
    if any("limit" not in s for s in manifest["shards"]):
        return None    # written before manifests recorded each shard's --limit
    return manifest if set(committed_stems(output)) == {s["name"] for s in manifest["shards"]} else None
