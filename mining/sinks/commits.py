"""Which input shards an output already holds, committed, and whether a rerun may reuse them.

A shard counts as done only through its `_done/<stem>.json` marker (written after its tar and parquet), so a
run killed at any point leaves either a committed shard or one that is simply mined again."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mining.logs import logger
from mining.sinks.layout import manifest_file, marker_file
from mining.sinks.reader import committed_stems
from mining.storage import Location, Where


class OutputConflict(ValueError):
    """The output holds shards mined with another configuration."""


MARKER_KEYS = ("name", "config_hash", "images_in", "images_with_pairs", "pairs", "drops")


def read_marker(output: Where, stem: str) -> dict[str, Any] | None:
    """A shard's marker, or None when it is damaged (not JSON, or not a marker): such a shard is not committed,
    and the next run mines it again."""
    try:
        marker = json.loads(marker_file(output, stem).read())
    except ValueError:
        return None
    return marker if isinstance(marker, dict) and all(k in marker for k in MARKER_KEYS) else None


def committed_markers(output: Where, threads: int = 32,
                      damaged: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every committed shard's marker by stem: one listing, then the markers read concurrently (on S3 each
    read is a request; sequential reads of 100k markers would take hours). Damaged markers are left out and
    their stems appended to `damaged`."""
    stems = committed_stems(output)
    if not stems:
        return {}
    with ThreadPoolExecutor(max_workers=min(threads, len(stems))) as pool:
        docs = dict(zip(stems, pool.map(lambda stem: read_marker(output, stem), stems)))
    for stem, doc in docs.items():
        if doc is None:
            logger.warning("the marker %s is damaged: shard %s is not committed and is mined again",
                           marker_file(output, stem), stem)
            if damaged is not None:
                damaged.append(stem)
    return {stem: doc for stem, doc in docs.items() if doc is not None}


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
    """The output's manifest when it describes exactly the committed shards (two listings and one read, not a
    read per marker: a rerun over 100k committed shards on S3 must not make 100k requests), else None. A marker
    changed after the manifest was written (damaged, say) makes the run read every marker."""
    manifest_path = manifest_file(output)
    try:
        manifest = json.loads(manifest_path.read())
        written = manifest_path.parent.modified_times(manifest_path.name)[manifest_path.name]
    except (OSError, ValueError, KeyError):
        return None
    if not isinstance(manifest, dict) or manifest.get("config_hash") != config_hash or "failed_shards" in manifest:
        return None
    if any(not isinstance(s, dict) or "limit" not in s for s in manifest.get("shards", [None])):
        return None    # written before manifests recorded each shard's --limit
    markers = Location.of(output).join("_done").modified_times(".json")
    if any(when > written for when in markers.values()):
        return None
    return manifest if {m.removesuffix(".json") for m in markers} == {s["name"] for s in manifest["shards"]} else None
