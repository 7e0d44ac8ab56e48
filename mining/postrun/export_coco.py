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
import threading
from typing import Any

import pyarrow.fs as pafs
from PIL import Image

from mining.sinks.images import load_images
from mining.sinks.reader import (MinedRecord, iter_pair_batches, pairs_files, read_manifest, read_shard_records,
                                 shard_files)
from mining.sources.uris import shard_stem
from mining.sinks.safe_names import safe_file_name
from mining.storage import TMP_MARK, S3Options, delete, exists, filesystem_for, is_s3, join, write_bytes_atomic


def _nouns(output: str, s3: S3Options | None) -> list[str]:
    nouns: set[str] = set()
    for uri in pairs_files(output, s3):
        for batch in iter_pair_batches(uri, ["noun"], s3):
            nouns.update(batch.column(0).to_pylist())
    return sorted(nouns)


def image_file_name(stem: str, key: str) -> str:
    """`<shard>_<key>.jpg`, made safe: a key is never a path."""
    return safe_file_name(stem, key, suffix=".jpg")


def export_coco(output: str, dest: str, images_dir: str | None = None, s3: S3Options | None = None) -> dict[str, Any]:
    """Write `dest` (local path or s3://); with `images_dir`, also the images in the masks' frame."""
    manifest = read_manifest(output, s3)
    check_destination(dest, images_dir, s3)
    categories = {noun: i for i, noun in enumerate(_nouns(output, s3), 1)}
    counts = {"images": 0, "annotations": 0, "categories": len(categories), "images_written": 0}
    written: list[str] = []   # image files this export wrote: removed again if it fails
    images_dir_is_new = images_dir is not None and not exists(images_dir, s3)
    try:
        _export(output, manifest, dest, images_dir, categories, counts, written, s3)
    except BaseException:
        for uri in written:
            delete(uri, s3)
        if images_dir_is_new and not is_s3(images_dir):
            with contextlib.suppress(OSError):
                os.rmdir(images_dir)   # only if empty: what else is there is not ours
        raise
    return counts


def _export(output: str, manifest: dict, dest: str, images_dir: str | None, categories: dict[str, int],
            counts: dict[str, int], written: list[str], s3: S3Options | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        images_tmp, anns_tmp = os.path.join(tmp, "images"), os.path.join(tmp, "annotations")
        with open(images_tmp, "w") as img_f, open(anns_tmp, "w") as ann_f:
            for uri in shard_files(output, s3):
                stem = shard_stem(uri)
                records = read_shard_records(uri, s3)
                for record in records:
                    _write_entries(record, stem, categories, counts, img_f, ann_f)
                if images_dir is not None:
                    counts["images_written"] += _write_images(output, manifest, stem, records, images_dir,
                                                              written, s3)
        result = os.path.join(tmp, "coco.json")
        with open(result, "w") as out:
            info = {"description": f"ovmine export of {output}", "config_hash": manifest["config_hash"]}
            out.write(json.dumps({"info": info, "licenses": []})[:-1])
            cats = [{"id": i, "name": n, "supercategory": "noun"} for n, i in categories.items()]
            out.write(f', "categories": {json.dumps(cats)}, "images": [')
            with open(images_tmp) as f:
                shutil.copyfileobj(f, out)
            out.write('], "annotations": [')
            with open(anns_tmp) as f:
                shutil.copyfileobj(f, out)
            out.write("]}")
        _publish(result, dest, s3)


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


def _write_images(output: str, manifest: dict, stem: str, records: list[MinedRecord], images_dir: str,
                  written: list[str], s3: S3Options | None) -> int:
    """One shard's images; those not stored in the output are decoded from the input shard in one read."""
    fetched = load_images(output, manifest, [(stem, r.key) for r in records if r.image is None], s3)
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
        uri = join(images_dir, image_file_name(stem, record.key))
        write_bytes_atomic(uri, buf.getvalue(), s3)
        written.append(uri)
        count += 1
    return count


def check_destination(dest: str, images_dir: str | None, s3: S3Options | None = None) -> None:
    """Refuse, before any work, a `dest` that cannot become a file, or an `images_dir` that is not a folder."""
    if dest.endswith("/"):
        raise ValueError(f"export destination {dest} names a folder: give a file, e.g. {join(dest, 'coco.json')}")
    fs, path = filesystem_for(dest, s3)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        raise ValueError(f"export destination {dest} is an existing folder: give a file path, e.g. "
                         f"{join(dest, 'coco.json')}")
    if not is_s3(dest):
        parent = os.path.dirname(os.path.abspath(dest))
        while not os.path.exists(parent):   # the nearest existing ancestor must be a folder we can create in
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(f"export destination {dest}: {parent} is a file, not a folder")
    if images_dir is not None:
        fs, path = filesystem_for(images_dir, s3)
        if fs.get_file_info(path).type == pafs.FileType.File:
            raise ValueError(f"--images-dir {images_dir} is a file: give a folder")


def _publish(local_file: str, dest: str, s3: S3Options | None) -> None:
    """`dest` appears complete or not at all, and a failure leaves no temporary file next to it."""
    if is_s3(dest):   # an S3 object appears only when its upload completes
        fs, path = filesystem_for(dest, s3)
        with open(local_file, "rb") as src, fs.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        return
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = f"{dest}{TMP_MARK}{os.getpid()}-{threading.get_ident()}"   # a name of write_bytes_atomic's kind
    try:
        shutil.copyfile(local_file, tmp)
        os.replace(tmp, dest)
    except BaseException:   # a full disk, Ctrl-C: nothing is left beside `dest`
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
