"""Read a mining output back as typed records. Only JSON and image bytes are decoded: nothing is unpickled."""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from webdataset.tariterators import base_plus_ext, tar_file_iterator

from mining import masks
from mining.records import Entity
from mining.schemas import RECORD_VERSION, SchemaError, pairs_arrow_schema
from mining.sinks.layout import manifest_file
from mining.storage import Location, Where


@dataclass
class MinedMask:
    rle: dict
    bbox: list[float]
    area: int
    score: float

    def decode(self) -> np.ndarray:
        """bool[H, W] in the record's working frame."""
        return masks.decode(self.rle)


@dataclass
class MinedPair:
    mask_index: int
    entity_index: int
    noun: str
    phrase: str
    similarity: float
    margin: float | None          # None: no rival mask
    probability: float | None     # None: the only candidate mask
    scale_similarities: list[float]


@dataclass
class MinedRecord:
    key: str
    shard: str
    captions: list[str]
    width: int
    height: int
    orig_width: int
    orig_height: int
    entities: list[Entity]
    masks: list[MinedMask]
    pairs: list[MinedPair]
    image: bytes | None = field(default=None, repr=False)
    caption_sources: list[str] = field(default_factory=list)   # per caption, when some is refined; empty: all original

    @classmethod
    def from_json(cls, doc: dict, image: bytes | None = None) -> "MinedRecord":
        if doc.get("schema_version") != RECORD_VERSION:
            raise SchemaError(f"record {doc.get('key')!r} has schema {doc.get('schema_version')!r}, "
                              f"this ovmine reads {RECORD_VERSION}")
        return cls(
            key=doc["key"], shard=doc["shard"], captions=doc["captions"], width=doc["width"], height=doc["height"],
            orig_width=doc["orig_width"], orig_height=doc["orig_height"],
            entities=[Entity(e["noun"], e["phrase"], tuple(e["span"]), e["caption_index"], e["adjectives"],
                             e.get("count", 1))
                      for e in doc["entities"]],
            masks=[MinedMask(m["segmentation"], m["bbox"], m["area"], m["score"]) for m in doc["masks"]],
            pairs=[MinedPair(**p) for p in doc["pairs"]], image=image, caption_sources=doc.get("caption_sources", []))


def committed_stems(output: Where) -> list[str]:
    """The shards committed in `output` (those with a _done marker), sorted: one listing."""
    return [f.name.removesuffix(".json") for f in Location.of(output).join("_done").list(".json")]


def committed_files(output: Where, folder: str, suffix: str) -> list[Location]:
    """The files of `folder` that belong to committed shards: what a run killed mid-write left without a
    marker is not part of the output."""
    committed = set(committed_stems(output))
    return [f for f in Location.of(output).join(folder).list(suffix) if f.name.removesuffix(suffix) in committed]


def shard_files(output: Where) -> list[Location]:
    return committed_files(output, "shards", ".tar")


def read_shard_documents(shard: Where) -> list[tuple[dict, bytes | None]]:
    """(record JSON, image bytes or None) of one output shard, in order; one shard is held at a time."""
    with Location.of(shard).open_stream() as raw:
        pending: dict[str, dict[str, bytes]] = {}
        for item in tar_file_iterator(io.BufferedReader(raw)):
            key, ext = base_plus_ext(item["fname"])
            pending.setdefault(key, {})[ext] = item["data"]
    documents = []
    for members in pending.values():
        doc = json.loads(members["json"])
        documents.append((doc, members.get(doc["image"]) if doc["image"] else None))
    return documents


def read_shard_records(shard: Where) -> list[MinedRecord]:
    return [MinedRecord.from_json(doc, image) for doc, image in read_shard_documents(shard)]


def iter_records(output: Where) -> Iterator[MinedRecord]:
    for shard in shard_files(output):
        yield from read_shard_records(shard)


def pairs_files(output: Where) -> list[Location]:
    return committed_files(output, "pairs", ".parquet")


def iter_pair_batches(pairs: Where, columns: list[str], batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Record batches of a few columns of one pairs file: streaming, one batch in memory at a time."""
    with Location.of(pairs).open_random() as f:
        yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns)


def read_pairs(output: Where) -> pa.Table:
    """The whole pairs table in memory: for tests and small runs; `mining.postrun.stats` streams instead."""
    files = pairs_files(output)
    if not files:
        return pairs_arrow_schema().empty_table()
    fs = files[0].filesystem()[0]
    return pads.dataset([f.filesystem()[1] for f in files], format="parquet", filesystem=fs,
                        schema=pairs_arrow_schema()).to_table()


class NotAnOutput(FileNotFoundError):
    """`output` holds no finished ovmine output: the message says which case and what to do."""


class UnfinishedOutput(NotAnOutput):
    """A run committed shards into `output` but did not write its manifest: it was interrupted (or is still
    running). `committed` names those shards, so that a tool may still report on them."""

    def __init__(self, message: str, committed: list[str]):
        super().__init__(message)
        self.committed = committed


def missing_output(output: Where) -> NotAnOutput:
    """Why `output` has no manifest, as the error to raise: no such path, not an output, or interrupted."""
    if not Location.of(output).exists():
        return NotAnOutput(f"no such output: {output}")
    committed = committed_stems(output)
    if not committed:
        return NotAnOutput(f"{output} is not an ovmine output (no manifest.json and no committed shards)")
    return UnfinishedOutput(f"{output} was interrupted ({len(committed)} shard{'s' if len(committed) > 1 else ''} "
                            f"committed, no manifest): rerun the mine command to finish it", committed)


def read_manifest(output: Where) -> dict:
    """The manifest of a finished output. Raises NotAnOutput (a FileNotFoundError) naming the case when there
    is none, and ValueError naming the file when it is not JSON."""
    uri = manifest_file(output)
    try:
        data = uri.read()
    except FileNotFoundError:
        raise missing_output(output) from None
    except OSError:   # pyarrow says "is a directory" or "not a directory" as a plain OSError
        if uri.exists():
            raise
        raise missing_output(output) from None
    try:
        return json.loads(data)
    except ValueError as err:   # JSON and UTF-8 errors alike
        raise ValueError(f"{uri} is not valid JSON ({err}): the output is damaged; rerun the command that wrote "
                         f"it (the same mine or curate command) to rewrite it") from None
