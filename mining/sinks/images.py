"""Fetch the pictures behind mined records, in the records' working frame, for reports and exports.

The output shard holds the image when the run had `output.write_images`; otherwise the input shard is read
again and the image decoded exactly as the run decoded it (its manifest's source settings), so masks line up.
"""
from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from mining.sinks.layout import shard_file
from mining.sinks.reader import read_shard_documents
from mining.sources.decode import decode_image
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.storage import Location, Where


def load_images(output: Where, manifest: dict, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
    """uint8[H, W, 3] images for (output shard name, key) pairs; a picture that cannot be found is left out.

    The record's own `shard` field names the input shard it was mined from, so this also works for curated
    outputs, whose records still point at the original input, which is reached with the output's S3 settings."""
    output = Location.of(output)
    by_shard: dict[str, set[str]] = defaultdict(set)
    for stem, key in wanted:
        by_shard[stem].add(key)
    source = manifest["config"]["source"]
    images: dict[tuple[str, str], np.ndarray] = {}
    for stem, keys in by_shard.items():
        out_shard = shard_file(output, stem)
        from_input: dict[str, set[str]] = defaultdict(set)
        for doc, image in read_shard_documents(out_shard) if out_shard.exists() else []:
            if doc["key"] not in keys:
                continue
            if image is not None:
                images[(stem, doc["key"])] = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
            else:
                from_input[doc["shard"]].add(doc["key"])
        for input_uri, missing in from_input.items():
            source_shard = output.at(input_uri)
            if not source_shard.exists():
                continue
            for sample in read_shard(source_shard):
                ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
                if sample.key in missing and ext:
                    images[(stem, sample.key)], _ = decode_image(sample.members[ext], source["max_image_pixels"],
                                                                 source["working_size"])
    return images


class _InputReader:
    """One input shard read forward once, for keys asked in (nearly) its own order: samples passed over that
    are asked for later are kept compressed, so a record order that differs from the input's still finds them."""

    def __init__(self, shard: Location, later: set[str]) -> None:
        self.samples = read_shard(shard) if shard.exists() else iter(())
        self.later, self.passed = later, {}

    def raw(self, key: str) -> bytes | None:
        self.later.discard(key)
        if key in self.passed:
            return self.passed.pop(key)
        for sample in self.samples:
            ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
            if sample.key == key:
                return sample.members[ext] if ext else None
            if sample.key in self.later and ext:
                self.passed[sample.key] = sample.members[ext]
        return None


def stream_images(output: Where, manifest: dict, stem: str,
                  keys: list[str]) -> Iterator[tuple[str, np.ndarray | None]]:
    """(key, uint8[H, W, 3] or None when it cannot be found) for `keys` of output shard `stem`, in that order,
    one decoded picture at a time: memory does not grow with the shard (training reads whole shards)."""
    output = Location.of(output)
    source = manifest["config"]["source"]
    wanted = set(keys)
    docs = {doc["key"]: (doc["shard"], image) for doc, image in read_shard_documents(shard_file(output, stem))
            if doc["key"] in wanted} if shard_file(output, stem).exists() else {}
    readers: dict[str, _InputReader] = {}
    for key in keys:
        if key not in docs:
            yield key, None
            continue
        input_uri, stored = docs[key]
        if stored is not None:
            yield key, np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
            continue
        if input_uri not in readers:
            later = {k for k, (uri, img) in docs.items() if uri == input_uri and img is None}
            readers[input_uri] = _InputReader(output.at(input_uri), later)
        raw = readers[input_uri].raw(key)
        yield key, None if raw is None else decode_image(raw, source["max_image_pixels"], source["working_size"])[0]
