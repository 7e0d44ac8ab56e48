"""Write a toy world: webdataset shards exactly like img2dataset output ({key}.jpg, {key}.txt, {key}.json)
and the ground truth as one COCO instances file (RLE masks, category names and their synonyms); or the shards
alone (`make_shards`: `ovmine sample-data` and the tests' inputs).

Every image is drawn from its own generator seeded by (seed, shard, index), so a world is the same on every
machine and any image can be re-rendered alone.
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
from PIL import Image
from tqdm import tqdm
from webdataset import TarWriter

from mining.logs import logger
from mining.sinks.guard import WORLD, check_folder_output
from mining.storage import Location, S3Options, Where
from mining import masks
from mining.toyworld.captions import caption_scene
from mining.toyworld.scene import Scene, render_scene
from mining.toyworld.vocab import CATEGORIES

GT_NAME = "ground_truth.json"


def scene_rng(seed: int, shard: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, shard, index])


def world_key(shard: int, index: int) -> str:
    return f"{shard:05d}{index:04d}"


def iter_world(seed: int, shards: int, per_shard: int, size: int = 128, first_shard: int = 0,
               closeup_rate: float = 0.2, plain_rate: float = 0.0) -> Iterator[tuple[int, str, Scene, list[str]]]:
    for shard in range(first_shard, shards):
        for index in range(per_shard):
            rng = scene_rng(seed, shard, index)
            scene = render_scene(rng, size, closeup_rate, plain_rate)
            yield shard, world_key(shard, index), scene, caption_scene(rng, scene)


def coco_categories() -> list[dict]:
    return [{"id": c.id, "name": c.name, "supercategory": c.kind, "isthing": int(c.kind == "thing"),
             "synonyms": list(c.synonyms)} for c in CATEGORIES]


def annotations_for(scene: Scene, image_id: int, next_id: int) -> list[dict]:
    anns = []
    instances = scene.things + scene.stuff
    rles = masks.encode_json(np.stack([i.mask for i in instances]))
    for inst, rle, box in zip(instances, rles, masks.boxes(rles)):
        anns.append({"id": next_id + len(anns), "image_id": image_id, "category_id": inst.category.id,
                     "segmentation": rle, "area": int(inst.mask.sum()),
                     "bbox": box,
                     "iscrowd": 0,
                     "attributes": {"colour": inst.colour, "visible_fraction": round(inst.visible_fraction, 3)}})
    return anns


def jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def prepare_dataset_folder(out: Where, earlier: list[Location], overwrite: bool) -> None:
    """A generated dataset goes into a new or empty folder (local or an S3 prefix): new shards written over part
    of an older set would leave a mixed dataset. With `overwrite`, the `earlier` dataset's files are removed
    first; nothing else in `out` is touched. Never inside or over another kind of ovmine output (the write
    guard's rules, `mining.sinks.guard`), even with `overwrite`."""
    out = Location.of(out)
    kind = out.kind()
    if kind == pafs.FileType.File:
        raise ValueError(f"{out} is a file: a dataset needs a folder")
    check_folder_output(out, WORLD, [], overwrite=True, flag="dataset folder")   # non-empty: decided below
    if kind == pafs.FileType.NotFound:
        return
    entries = out.entry_names()
    if not entries:
        return
    if not overwrite:
        raise ValueError(f"{out} is not empty ({len(entries)} entr{'ies' if len(entries) > 1 else 'y'}, e.g. "
                         f"{entries[0]}): choose a new folder, or pass --overwrite to replace the dataset there")
    for file in earlier:
        file.delete()


def world_members(seed: int, shard: int, key: str, scene: Scene, captions: list[str]) -> dict[str, object]:
    """One image's tar members, as img2dataset writes them (a JPEG of a quality drawn per image)."""
    quality = int(scene_rng(seed, shard, 10_000 + int(key[-4:])).integers(75, 96))
    return {"__key__": key, "jpg": jpeg(scene.image, quality), "txt": captions[0].encode(),
            "json": json.dumps({"key": key, "captions": captions}).encode()}


def make_shards(out_dir: str | Path, shards: int = 2, per_shard: int = 8, seed: int = 0, size: int = 128,
                overwrite: bool = False) -> list[Path]:
    """A toy world's shards alone, no ground truth, as `out_dir/{shard:05d}.tar`. `out_dir` must be new or empty,
    unless `overwrite`: then the .tar shards already there are replaced."""
    out = Path(out_dir)
    prepare_dataset_folder(str(out), [Location(str(p)) for p in out.glob("*.tar")] if out.is_dir() else [], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{shard:05d}.tar" for shard in range(shards)]
    writers: dict[int, TarWriter] = {}
    for shard, key, scene, captions in iter_world(seed, shards, per_shard, size):
        if shard not in writers:
            writers[shard] = TarWriter(str(paths[shard]), mtime=0)
        writers[shard].write(world_members(seed, shard, key, scene, captions))
        if int(key[-4:]) == per_shard - 1:
            writers.pop(shard).close()
    return paths


def make_world(out: str, shards: int = 2, per_shard: int = 32, seed: int = 0, size: int = 128,
               s3: S3Options | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Write `out/shards/{shard:05d}.tar` and `out/ground_truth.json`; return a summary. `out` (a folder or an
    S3 prefix) must be new or empty, unless `overwrite`: then the world already there is replaced."""
    if shards < 1 or per_shard < 1:
        raise ValueError(f"a world needs at least one shard and one image per shard (got {shards}, {per_shard})")
    folder = Location.of(out, s3)
    prepare_dataset_folder(folder, [*folder.join("shards").list(".tar"), folder / GT_NAME], overwrite)
    images, annotations = [], []
    buffers: dict[int, io.BytesIO] = {}
    writers: dict[int, TarWriter] = {}
    total = shards * per_shard
    for shard, key, scene, captions in tqdm(iter_world(seed, shards, per_shard, size), total=total,
                                            desc="toyworld", unit="img", disable=not progress):
        if shard not in writers:
            buffers[shard] = io.BytesIO()
            writers[shard] = TarWriter(buffers[shard], mtime=0)
        writers[shard].write(world_members(seed, shard, key, scene, captions))
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": f"{key}.jpg", "key": key, "width": size, "height": size,
                       "shard": f"{shard:05d}", "captions": captions})
        annotations.extend(annotations_for(scene, image_id, len(annotations) + 1))
        if len(images) % per_shard == 0:
            writers.pop(shard).close()
            folder.join("shards", f"{shard:05d}.tar").write_atomic(buffers.pop(shard).getvalue())
    gt = {"info": {"description": "ovmine toy world", "exhaustive": True, "seed": seed, "shards": shards,
                   "per_shard": per_shard, "size": size},
          "images": images, "annotations": annotations, "categories": coco_categories()}
    (folder / GT_NAME).write_atomic(json.dumps(gt).encode())
    logger.info("toy world: %d images, %d instances in %s", len(images), len(annotations), out)
    return {"images": len(images), "instances": len(annotations), "shards": shards,
            "shards_uri": folder.join("shards").uri, "ground_truth": (folder / GT_NAME).uri}
