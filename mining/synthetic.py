"""A small generated image–caption dataset, written exactly like img2dataset output ({key}.jpg + {key}.txt
+ {key}.json), so the mining path can run with no download. It is a smoke-test world, not a benchmark:
coloured shapes on a coloured ground with a caption that names them."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, ImageDraw
from webdataset import TarWriter

from mining.storage import S3Options, delete, filesystem_for

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
           "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")
GROUNDS = {"grass": (60, 140, 50), "sand": (210, 190, 130), "water": (40, 100, 170), "snow": (235, 240, 245)}


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def make_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[str]]:
    ground = rng.choice(list(GROUNDS))
    base = np.array(GROUNDS[ground], np.float32) + rng.normal(0, 12, (size, size, 3))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    phrases = []
    for _ in range(int(rng.integers(1, 4))):
        shape = str(rng.choice(SHAPES))
        colour = str(rng.choice([c for c in COLOURS if c not in ("white",) or ground != "snow"]))
        side = int(rng.integers(size // 6, size // 2))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        _draw_shape(draw, shape, (x0, y0, x0 + side, y0 + side), COLOURS[colour])
        phrases.append(f"a {'large' if side > size // 3 else 'small'} {colour} {shape}")
    caption = f"{' and '.join(phrases)} on the {ground}"
    return image, [caption[0].upper() + caption[1:] + ".", f"Shapes lying on {ground}."]


def prepare_dataset_folder(out: str, earlier: list[str], overwrite: bool, s3: S3Options | None = None) -> None:
    """A generated dataset goes into a new or empty folder (local or an S3 prefix): new shards written over part
    of an older set would leave a mixed dataset. With `overwrite`, the `earlier` dataset's files are removed
    first; nothing else in `out` is touched."""
    fs, path = filesystem_for(out, s3)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.File:
        raise ValueError(f"{out} is a file: a dataset needs a folder")
    if kind == pafs.FileType.NotFound:
        return
    entries = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))
    if not entries:
        return
    if not overwrite:
        raise ValueError(f"{out} is not empty ({len(entries)} entr{'ies' if len(entries) > 1 else 'y'}, e.g. "
                         f"{entries[0]}): choose a new folder, or pass --overwrite to replace the dataset there")
    for uri in earlier:
        delete(uri, s3)


def make_shards(out_dir: str | Path, shards: int = 2, per_shard: int = 8, seed: int = 0, size: int = 128,
                overwrite: bool = False) -> list[Path]:
    """Write `out_dir/{shard:05d}.tar`. `out_dir` must be new or empty, unless `overwrite`: then the .tar shards
    already there are replaced."""
    out = Path(out_dir)
    prepare_dataset_folder(str(out), [str(p) for p in out.glob("*.tar")] if out.is_dir() else [], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(shards):
        path = out / f"{s:05d}.tar"
        with TarWriter(str(path), mtime=0) as tar:
            for i in range(per_shard):
                image, captions = make_scene(rng, size)
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=92)
                key = f"{s:05d}{i:04d}"
                tar.write({"__key__": key, "jpg": buf.getvalue(), "txt": captions[0].encode(),
                           "json": json.dumps({"key": key, "captions": captions}).encode()})
        paths.append(path)
    return paths
