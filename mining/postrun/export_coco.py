"""Export a mining output as COCO instances: one category per noun, one annotation per pair (RLE segmentation,
bbox, area, iscrowd 0, plus the pair's similarity as `score`), images with their working-frame sizes.

The JSON is streamed to a temporary file (images and annotations spooled separately) so memory does not grow
with the number of pairs; it appears at its destination only when complete. A destination that cannot become a
file is refused before any work, and an export that fails removes the images it wrote: nothing is left behind.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from typing import Any

import pyarrow.fs as pafs
from PIL import Image

from mining.sinks.guard import COCO, WriteRefused, check_file_output, check_folder_output, file_kind, run_inputs
from mining.sinks.images import load_images
from mining.sinks.lease import OutputLease
from mining.sinks.reader import (MinedRecord, iter_pair_batches, pairs_files, read_manifest, read_shard_records,
                                 shard_files)
from mining.sources.uris import shard_stem
from mining.sinks.safe_names import safe_file_name
from mining.storage import Location, Where


def _nouns(output: Location) -> list[str]:
    nouns: set[str] = set()
    for pairs in pairs_files(output):
        for batch in iter_pair_batches(pairs, ["noun"]):
            nouns.update(batch.column(0).to_pylist())
    return sorted(nouns)


def image_file_name(stem: str, key: str) -> str:
    """`<shard>_<key>.jpg`, made safe: a key is never a path."""
    return safe_file_name(stem, key, suffix=".jpg")


def export_coco(output: Where, dest: Where, images_dir: Where | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write `dest` (local path or s3://, reached with the output's S3 settings when a string); with
    `images_dir`, also the images in the masks' frame. Both pass the write guard (`mining.sinks.guard`): never
    over the run or its inputs; over an earlier export, or (with `overwrite`) a file or folder that is no
    ovmine output. The images folder is held by a lease while it is written and marked complete at the end."""
    output = Location.of(output)
    dest = Location.of(dest, output.s3)
    images_dir = None if images_dir is None else Location.of(images_dir, output.s3)
    manifest = read_manifest(output)
    check_destination(dest, images_dir)
    inputs = run_inputs(output)
    check_file_output(dest, COCO, inputs, overwrite, flag="export destination")
    if images_dir is not None:   # the images of the earlier export at `dest` may be written again
        check_folder_output(images_dir, "folder of exported images", inputs,
                            overwrite or _earlier_images(dest, images_dir), flag="--images-dir")
    categories = {noun: i for i, noun in enumerate(_nouns(output), 1)}
    counts = {"images": 0, "annotations": 0, "categories": len(categories), "images_written": 0}
    written: list[Location] = []   # image files this export wrote: removed again if it fails
    images_dir_is_new = images_dir is not None and not images_dir.exists()
    lease = OutputLease(images_dir, "export coco") if images_dir is not None else contextlib.nullcontext()
    try:
        with lease:
            _export(output, manifest, dest, images_dir, categories, counts, written)
    except BaseException:
        for image in written:
            image.delete()
        if images_dir_is_new and not images_dir.is_s3:
            with contextlib.suppress(OSError):
                os.rmdir(images_dir.uri)   # only if empty: what else is there is not ours
        raise
    return counts


def _export(output: Location, manifest: dict, dest: Location, images_dir: Location | None,
            categories: dict[str, int], counts: dict[str, int], written: list[Location]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        images_tmp, anns_tmp = os.path.join(tmp, "images"), os.path.join(tmp, "annotations")
        with open(images_tmp, "w") as img_f, open(anns_tmp, "w") as ann_f:
            for shard in shard_files(output):
                stem = shard_stem(shard.uri)
                records = read_shard_records(shard)
                for record in records:
                    _write_entries(record, stem, categories, counts, img_f, ann_f)
                if images_dir is not None:
                    counts["images_written"] += _write_images(output, manifest, stem, records, images_dir,
                                                              written)
        result = os.path.join(tmp, "coco.json")
        with open(result, "w") as out:
            info = {"description": f"ovmine export of {output}", "config_hash": manifest["config_hash"],
                    "images_dir": None if images_dir is None else images_dir.absolute().uri}
            out.write(json.dumps({"info": info, "licenses": []})[:-1])
            cats = [{"id": i, "name": n, "supercategory": "noun"} for n, i in categories.items()]
            out.write(f', "categories": {json.dumps(cats)}, "images": [')
            with open(images_tmp) as f:
                shutil.copyfileobj(f, out)
            out.write('], "annotations": [')
            with open(anns_tmp) as f:
                shutil.copyfileobj(f, out)
            out.write("]}")
        dest.publish(result)   # appears complete or not at all, leaving no temporary beside it


def _write_entries(record: MinedRecord, stem: str, categories: dict[str, int], counts: dict[str, int],
                   img_f, ann_f) -> None:
    counts["images"] += 1
    image_id = counts["images"]
    entry = {"id": image_id, "file_name": image_file_name(stem, record.key), "width": record.width,
             "height": record.height, "ovmine_key": record.key, "ovmine_shard": record.shard,
             "captions": record.captions}
    img_f.write(("," if image_id > 1 else "") + json.dumps(entry))
    for pair in record.pairs:
        mask = record.masks[pair.mask_index]
        counts["annotations"] += 1
        ann = {"id": counts["annotations"], "image_id": image_id, "category_id": categories[pair.noun],
               "segmentation": mask.rle, "area": mask.area, "bbox": mask.bbox, "iscrowd": 0,
               "score": pair.similarity, "phrase": pair.phrase}
        ann_f.write(("," if counts["annotations"] > 1 else "") + json.dumps(ann))


def _write_images(output: Location, manifest: dict, stem: str, records: list[MinedRecord], images_dir: Location,
                  written: list[Location]) -> int:
    """One shard's images; those not stored in the output are decoded from the input shard in one read."""
    fetched = load_images(output, manifest, [(stem, r.key) for r in records if r.image is None])
    count = 0
    for record in records:
        if record.image is not None:
            pixels = Image.open(io.BytesIO(record.image)).convert("RGB")
        elif (stem, record.key) in fetched:
            pixels = Image.fromarray(fetched[(stem, record.key)])
        else:
            continue
        buf = io.BytesIO()
        pixels.save(buf, format="JPEG", quality=95)
        image = images_dir / image_file_name(stem, record.key)
        image.write_atomic(buf.getvalue())
        written.append(image)
        count += 1
    return count


def _earlier_images(dest: Location, images_dir: Location) -> bool:
    """Whether `dest` is an earlier export whose images went to `images_dir` (its info, first in the file,
    says so): that folder is this command's own, to write again."""
    if file_kind(dest) != COCO:
        return False
    with dest.open_stream() as f:
        head = f.read(1 << 16).decode("utf-8", "replace")
    try:
        info, _ = json.JSONDecoder().raw_decode(head, head.index("{", 1))
    except ValueError:
        return False
    return info.get("images_dir") == images_dir.absolute().uri


def check_destination(dest: Location, images_dir: Location | None) -> None:
    """Refuse, before any work, a `dest` that cannot become a file, or an `images_dir` that is not a folder."""
    if dest.uri.endswith("/"):
        raise ValueError(f"export destination {dest} names a folder: give a file, e.g. {dest / 'coco.json'}")
    if dest.kind() == pafs.FileType.Directory:
        raise WriteRefused(f"export destination {dest} is an existing folder: give a file path, e.g. "
                           f"{dest / 'coco.json'}")
    if not dest.is_s3:
        parent = os.path.dirname(os.path.abspath(dest.uri))
        while not os.path.exists(parent):   # the nearest existing ancestor must be a folder we can create in
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(f"export destination {dest}: {parent} is a file, not a folder")
    if images_dir is not None and images_dir.kind() == pafs.FileType.File:
        raise ValueError(f"--images-dir {images_dir} is a file: give a folder")

