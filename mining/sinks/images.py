"""Fetch the pictures behind mined records, in the records' working frame, for reports and exports.

The output shard holds the image when the run had `output.write_images`; otherwise the input shard is read
again and the image decoded exactly as the run decoded it (its manifest's source settings), so masks line up.
"""
from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from PIL import Image
from webdataset.tariterators import base_plus_ext

from mining.sinks.layout import shard_uri
from mining.sources.decode import decode_image
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.storage import S3Options, exists, filesystem_for


def _output_members(uri: str, keys: set[str], s3: S3Options | None) -> dict[str, dict[str, bytes]]:
    found: dict[str, dict[str, bytes]] = defaultdict(dict)
    fs, path = filesystem_for(uri, s3)
    with fs.open_input_stream(path) as raw, tarfile.open(fileobj=io.BufferedReader(raw), mode="r|*") as tar:
        for info in tar:
            key, ext = base_plus_ext(info.name)
            if key in keys:
                found[key][ext] = tar.extractfile(info).read()
    return found


def load_images(output: str, manifest: dict, wanted: Iterable[tuple[str, str]],
                s3: S3Options | None = None) -> dict[tuple[str, str], np.ndarray]:
    """uint8[H, W, 3] images for (shard name, key) pairs; a picture that cannot be found is left out."""
    by_shard: dict[str, set[str]] = defaultdict(set)
    for stem, key in wanted:
        by_shard[stem].add(key)
    source = manifest["config"]["source"]
    inputs = {s["name"]: s["input"] for s in manifest["shards"]}
    images: dict[tuple[str, str], np.ndarray] = {}
    for stem, keys in by_shard.items():
        out_uri = shard_uri(output, stem)
        members = _output_members(out_uri, keys, s3) if exists(out_uri, s3) else {}
        for key, m in members.items():
            record = json.loads(m["json"])
            if record["image"] and record["image"] in m:
                images[(stem, key)] = np.asarray(Image.open(io.BytesIO(m[record["image"]])).convert("RGB"))
        missing = {k for k in keys if (stem, k) not in images}
        if missing and stem in inputs and exists(inputs[stem], s3):
            for sample in read_shard(inputs[stem], s3):
                ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
                if sample.key in missing and ext:
                    images[(stem, sample.key)], _ = decode_image(sample.members[ext], source["max_image_pixels"],
                                                                 source["working_size"])
    return images
