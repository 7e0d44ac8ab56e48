"""Where each output lives, in one place: shards/<stem>.tar, pairs/<stem>.parquet, _done/<stem>.json
(the per-shard commit marker, written last) and manifest.json."""
from __future__ import annotations

from mining.storage import join


def shard_uri(output: str, stem: str) -> str:
    return join(output, "shards", f"{stem}.tar")


def pairs_uri(output: str, stem: str) -> str:
    return join(output, "pairs", f"{stem}.parquet")


def marker_uri(output: str, stem: str) -> str:
    return join(output, "_done", f"{stem}.json")


def manifest_uri(output: str) -> str:
    return join(output, "manifest.json")
