"""Where each output lives, in one place: shards/<stem>.tar, pairs/<stem>.parquet, status/<stem>.parquet
(every sample's fate), stats/<stem>.json (a shard's counts and times), _done/<stem>.json (the per-shard commit
marker, written last) and manifest.json."""
from __future__ import annotations

import os

from mining.storage import is_s3, join


class OutputHoldsInputs(ValueError):
    """The output folder contains input shards: writing it could overwrite them."""


OUTPUT_FOLDERS = ("shards", "pairs", "status", "stats", "_done")


def shard_uri(output: str, stem: str) -> str:
    return join(output, "shards", f"{stem}.tar")


def pairs_uri(output: str, stem: str) -> str:
    return join(output, "pairs", f"{stem}.parquet")


def status_uri(output: str, stem: str) -> str:
    return join(output, "status", f"{stem}.parquet")


def stats_uri(output: str, stem: str) -> str:
    return join(output, "stats", f"{stem}.json")


def marker_uri(output: str, stem: str) -> str:
    return join(output, "_done", f"{stem}.json")


def manifest_uri(output: str) -> str:
    return join(output, "manifest.json")


def _location(uri: str) -> str:
    """A comparable form: s3://bucket/key as is, local paths resolved (symlinks, '..', relative)."""
    return uri.rstrip("/") if is_s3(uri) else os.path.realpath(uri)


def refuse_inputs_inside(output: str, inputs: list[str]) -> None:
    """No output file may ever be an input: every output file lies under `output`, so no input may."""
    root = _location(output)
    for uri in inputs:
        where = _location(uri)
        if where == root or where.startswith(root + "/"):
            raise OutputHoldsInputs(
                f"the output {output} holds the input shard {uri}: mining would write over its inputs "
                f"(e.g. {shard_uri(output, 'NAME')}); choose an --output outside the input folders")
