"""Where each output lives, in one place: shards/<stem>.tar, pairs/<stem>.parquet, status/<stem>.parquet
(every sample's fate), stats/<stem>.json (a shard's counts and times), dropped/<stem>.json (a few dropped samples'
entities and masks, when a shard has some), _done/<stem>.json (the per-shard commit marker, written last) and
manifest.json."""
from __future__ import annotations

from mining.storage import Location, Where


OUTPUT_FOLDERS = ("shards", "pairs", "status", "stats", "dropped", "_done")


def shard_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("shards", f"{stem}.tar")


def pairs_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("pairs", f"{stem}.parquet")


def status_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("status", f"{stem}.parquet")


def stats_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("stats", f"{stem}.json")


def dropped_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("dropped", f"{stem}.json")


def marker_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("_done", f"{stem}.json")


def manifest_file(output: Where) -> Location:
    return Location.of(output) / "manifest.json"


def clear_output(output: Where) -> None:
    """Remove an earlier output's own files (not what else the folder holds), so that a command replacing it
    leaves no shard of the old one behind: the manifest first, then the markers, then the rest (a reader that
    looks meanwhile finds an unfinished output, never a mixed one). Call only while holding the lease."""
    output = Location.of(output)
    manifest_file(output).delete()
    for folder in ("_done", "_parts", *OUTPUT_FOLDERS):
        output.join(folder).delete_tree()
