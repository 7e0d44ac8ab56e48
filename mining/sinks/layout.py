"""Where each output lives, in one place: shards/<stem>.tar, pairs/<stem>.parquet, status/<stem>.parquet
(every sample's fate), stats/<stem>.json (a shard's counts and times), _done/<stem>.json (the per-shard commit
marker, written last) and manifest.json."""
from __future__ import annotations

from mining.storage import Location, Where


class OutputHoldsInputs(ValueError):
    """The output folder contains input shards: writing it could overwrite them."""


OUTPUT_FOLDERS = ("shards", "pairs", "status", "stats", "_done")


def shard_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("shards", f"{stem}.tar")


def pairs_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("pairs", f"{stem}.parquet")


def status_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("status", f"{stem}.parquet")


def stats_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("stats", f"{stem}.json")


def marker_file(output: Where, stem: str) -> Location:
    return Location.of(output).join("_done", f"{stem}.json")


def manifest_file(output: Where) -> Location:
    return Location.of(output) / "manifest.json"


def refuse_inputs_inside(output: Where, inputs: list[Where]) -> None:
    """No output file may ever be an input: every output file lies under `output`, so no input may."""
    output = Location.of(output)
    root = output.comparable()
    for shard in inputs:
        where = Location.of(shard).comparable()
        if where == root or where.startswith(root + "/"):
            raise OutputHoldsInputs(
                f"the output {output} holds the input shard {shard}: mining would write over its inputs "
                f"(e.g. {shard_file(output, 'NAME')}); choose an --output outside the input folders")
