"""Which input shards an output already holds, committed, and whether a rerun may reuse them.

A shard counts as done only through its `_done/<stem>.json` marker (written after its tar and parquet), so a
run killed at any point leaves either a committed shard or one that is simply mined again."""
from __future__ import annotations

import json
from typing import Any

from mining.sinks.layout import marker_uri
from mining.sinks.reader import list_files
from mining.sources.uris import shard_stem
from mining.storage import S3Options, read_bytes


class OutputConflict(ValueError):
    """The output holds shards mined with another configuration."""


def committed_markers(output: str, s3: S3Options | None = None) -> dict[str, dict[str, Any]]:
    stems = [shard_stem(uri).removesuffix(".json") for uri in list_files(output, "_done", ".json", s3)]
    return {stem: json.loads(read_bytes(marker_uri(output, stem), s3)) for stem in stems}


def reusable(markers: dict[str, dict[str, Any]], stems_and_limits: dict[str, int | None], config_hash: str,
             output: str) -> set[str]:
    """Stems whose committed shard can stand as it is. Refuses to mix configurations in one output."""
    foreign = sorted(stem for stem, m in markers.items() if m["config_hash"] != config_hash)
    if foreign:
        raise OutputConflict(
            f"{output} holds {len(foreign)} shard(s) mined with another config (e.g. {foreign[0]}: "
            f"{markers[foreign[0]]['config_hash']}, this run: {config_hash}); use a new --output, or --overwrite "
            f"to mine them again with this config")
    return {stem for stem, limit in stems_and_limits.items()
            if stem in markers and markers[stem].get("limit") == limit}
