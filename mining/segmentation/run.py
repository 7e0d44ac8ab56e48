"""`ovmine segment`: images or webdataset shards in, a PNG label map and a JSON list of segments per image out.

Label maps hold the class's index in the given names (uint8 PNG, 255 = no class; uint16 with 65535 when there
are 255 names or more); the JSON beside it names the classes, so a map reads without the command line."""
from __future__ import annotations

import io
import json
import os
import posixpath
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mining.logs import logger
from mining.sinks.guard import SEGMENTATION, SEGMENTATION_DONE, check_folder_output
from mining.sinks.lease import OutputLease
from mining.sinks.safe_names import safe_file_name
from mining.sources.decode import decode_image
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.sources.uris import expand_inputs
from mining.storage import Location, S3Options, Where
from mining.segmentation.predict import NONE, Prediction

MAX_PIXELS = 1 << 28


def parse_classes(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']; an empty or repeated name is an error naming it."""
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"--classes {text!r}: give comma-separated class names, e.g. \"grass,sky,circle\"")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--classes names {', '.join(repeated)} more than once")
    return names


def is_image_file(uri: str) -> bool:
    return PurePosixPath(uri).suffix.lower().lstrip(".") in IMAGE_EXTS


def _relative_names(uris: list[str]) -> dict[str, str]:
    """uri -> its path below the inputs' common folder, without extension: `a/x.jpg` and `b/x.jpg` give `a/x` and
    `b/x`, one file or one folder gives bare names."""
    paths = [u[len("s3://"):] if u.startswith("s3://") else os.path.abspath(u) for u in uris]
    try:
        common = posixpath.commonpath([posixpath.dirname(p) for p in paths]) if paths else ""
    except ValueError:   # local and s3:// inputs together: no common folder
        common = ""
    return {u: posixpath.splitext(posixpath.relpath(p, common) if common else p.lstrip("/"))[0]
            for u, p in zip(uris, paths)}


def iter_images(inputs: list[str], max_size: int, s3: S3Options | None = None
                ) -> Iterator[tuple[str, str, np.ndarray]]:
    """(name, source, uint8[H, W, 3]) of every image file and every image of every shard given, longest side at
    most `max_size`. Names are distinct for distinct inputs: an image file's path below the files' common folder,
    a shard's image `{shard path below the shards' common folder}_{key}`; `source` is the file, or `shard:key`."""
    files = [u for u in inputs if is_image_file(u)]
    shards = expand_inputs([u for u in inputs if not is_image_file(u)], s3) if len(files) < len(inputs) else []
    file_names, shard_names = _relative_names(files), _relative_names(shards)
    for uri in files:
        try:
            raw = Location.of(uri, s3).read()
        except FileNotFoundError:
            raise FileNotFoundError(f"input image not found: {uri}") from None
        try:
            pixels, _ = decode_image(raw, MAX_PIXELS, max_size)
        except (OSError, ValueError) as err:
            raise ValueError(f"{uri}: not a readable image ({err})") from None
        yield file_names[uri], uri, pixels
    for uri in shards:
        for sample in read_shard(Location.of(uri, s3)):
            ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
            if ext is None:
                logger.warning("%s: %r has no image; skipped", uri, sample.key)
                continue
            try:
                pixels, _ = decode_image(sample.members[ext], MAX_PIXELS, max_size)
            except (OSError, ValueError) as err:
                logger.warning("%s: %r is not a readable image (%s); skipped", uri, sample.key, err)
                continue
            yield f"{shard_names[uri]}_{sample.key}", f"{uri}:{sample.key}", pixels


def inputs_read(inputs: list[str], s3: S3Options | None = None) -> list[str]:
    """The files `segment` reads: the image files and the shards the other inputs expand to."""
    files = [u for u in inputs if is_image_file(u)]
    return files + (expand_inputs([u for u in inputs if not is_image_file(u)], s3) if len(files) < len(inputs) else [])


def label_png(labels: np.ndarray, classes: int) -> bytes:
    """PNG bytes of an int[H, W] label map: uint8 (255 = none) below 255 classes, else uint16 (65535 = none)."""
    dtype, none = (np.uint8, 255) if classes < 255 else (np.uint16, 65535)
    buf = io.BytesIO()
    Image.fromarray(np.where(labels == NONE, none, labels).astype(dtype)).save(buf, format="PNG")
    return buf.getvalue()


def read_label_png(data: bytes) -> np.ndarray:
    """int32[H, W] from `label_png`'s bytes, NONE where no class."""
    arr = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    none = 255 if arr.dtype == np.uint8 else 65535
    return np.where(arr == none, NONE, arr.astype(np.int32))


def output_base(name: str) -> str:
    """A name as a safe relative path (each folder and the file made safe: a key is never a path)."""
    return "/".join(safe_file_name(part) for part in name.split("/") if part not in ("", ".", ".."))


def write_prediction(out: Location, base: str, source: str, prediction: Prediction, names: list[str]) -> dict[str, Any]:
    (out / f"{base}.png").write_atomic(label_png(prediction.labels, len(names)))
    doc = {"image": source, "label_map": f"{base.rsplit('/', 1)[-1]}.png", "height": int(prediction.labels.shape[0]),
           "width": int(prediction.labels.shape[1]), "classes": names, "segments": prediction.segments}
    (out / f"{base}.json").write_atomic((json.dumps(doc, indent=1) + "\n").encode())
    return doc


def _unique(base: str, used: set[str]) -> str:
    """`base`, or `base-2`, `base-3`, ... when an earlier input took it (x.jpg and x.png in one folder)."""
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}-{n}"
    used.add(name)
    return name


def _earlier_files(out: Location) -> list[str]:
    """The files an earlier run listed, those that are names this command makes (never a path out of `out`)."""
    try:
        files = json.loads((out / SEGMENTATION_DONE).read()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and f.endswith((".png", ".json"))
            and output_base(f.rsplit(".", 1)[0]) == f.rsplit(".", 1)[0]]


def segment_inputs(predictor, names: list[str], inputs: list[str], out: Where, max_size: int = 1024,
                   s3: S3Options | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Segment every image of `inputs` into `out` (local or s3://); returns a summary (images, per-class pixel
    counts, the files written). `out` passes the write guard (`mining.sinks.guard`) and is held by a lease; its
    `segmentation.json`, written last, lists the files, so a rerun removes what an earlier run wrote and this
    one did not."""
    out = Location.of(out, s3)
    existing = check_folder_output(out, SEGMENTATION, inputs_read(inputs, s3), overwrite)
    images, pixels, used = 0, dict.fromkeys(names, 0), set()
    with OutputLease(out, "segment"):
        earlier = _earlier_files(out) if existing == SEGMENTATION else []
        for name, source, image in iter_images(inputs, max_size, s3):
            if not used:
                (out / SEGMENTATION_DONE).delete()   # complete again only when this run is
            base = _unique(output_base(name), used)
            doc = write_prediction(out, base, source, predictor(image, names), names)
            images += 1
            for seg in doc["segments"]:
                pixels[seg["class"]] += seg["area"]
        if images == 0:
            raise ValueError(f"no image found in {', '.join(inputs)}")
        files = sorted(f"{base}{ext}" for base in used for ext in (".png", ".json"))
        for stale in sorted(set(earlier) - set(files)):
            (out / stale).delete()
        summary = {"out": out.uri, "images": images, "classes": names, "pixels_per_class": pixels}
        (out / SEGMENTATION_DONE).write_atomic(json.dumps(summary | {"files": files}, indent=1).encode())
    return summary
