"""`ovmine segment`: images or webdataset shards in, a PNG label map and a JSON list of segments per image out.

Label maps hold the class's index in the given names (uint8 PNG, 255 = no class; uint16 with 65535 when there
are 255 names or more); the JSON beside it names the classes, so a map reads without the command line."""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mining.logs import logger
from mining.sinks.safe_names import safe_file_name
from mining.sources.decode import decode_image
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.sources.uris import expand_inputs, shard_stem
from mining.storage import Location, S3Options
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


def iter_images(inputs: list[str], max_size: int, s3: S3Options | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, uint8[H, W, 3]) of every image file and every image of every shard given, longest side at most
    `max_size`; a shard's image is named `{shard stem}_{key}`."""
    files = [u for u in inputs if is_image_file(u)]
    shards = expand_inputs([u for u in inputs if not is_image_file(u)], s3) if len(files) < len(inputs) else []
    for uri in files:
        try:
            raw = Location.of(uri, s3).read()
        except FileNotFoundError:
            raise FileNotFoundError(f"input image not found: {uri}") from None
        try:
            pixels, _ = decode_image(raw, MAX_PIXELS, max_size)
        except (OSError, ValueError) as err:
            raise ValueError(f"{uri}: not a readable image ({err})") from None
        yield PurePosixPath(uri).stem, pixels
    for uri in shards:
        stem = shard_stem(uri)
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
            yield f"{stem}_{sample.key}", pixels


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


def write_prediction(out: Path, name: str, prediction: Prediction, names: list[str]) -> dict[str, Any]:
    base = safe_file_name(name)
    (out / f"{base}.png").write_bytes(label_png(prediction.labels, len(names)))
    doc = {"image": name, "label_map": f"{base}.png", "height": int(prediction.labels.shape[0]),
           "width": int(prediction.labels.shape[1]), "classes": names, "segments": prediction.segments}
    (out / f"{base}.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def segment_inputs(predictor, names: list[str], inputs: list[str], out: str | Path, max_size: int = 1024,
                   s3: S3Options | None = None) -> dict[str, Any]:
    """Segment every image of `inputs` into `out`; returns a summary (images, per-class pixel counts)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, pixels = 0, dict.fromkeys(names, 0)
    for name, image in iter_images(inputs, max_size, s3):
        doc = write_prediction(out, name, predictor(image, names), names)
        images += 1
        for seg in doc["segments"]:
            pixels[seg["class"]] += seg["area"]
    if images == 0:
        raise ValueError(f"no image found in {', '.join(inputs)}")
    return {"out": str(out), "images": images, "classes": names, "pixels_per_class": pixels}
