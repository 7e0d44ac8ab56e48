"""Region stage speed: dense mask pooling vs masked crops with the same convolutional CLIP.

    .venv/bin/python bench/regions.py                        # convnext_base_w (random weights), 1024 px, 100 masks
    .venv/bin/python bench/regions.py --images 4 --working-size 640
    .venv/bin/python bench/regions.py --toy                  # the toy world's shipped CLIP at its 128-px frame
    .venv/bin/python bench/regions.py --device cuda --json

Both modes run the region stage's own code (`RegionStage.region_embeddings`, built from a RunConfig as mining
builds it), on the same images and the same masks; only `regions.mode` differs. The model is a real open_clip
architecture built with `pretrained: null` (random weights, nothing downloaded): speed does not depend on the
weights. Text embedding is left out (it is cached per noun in a run). Each mode is warmed up on one image
first, so model loading and first-call costs are not in the figures. Figures, not assertions.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mining.config import build_config
from mining.stages.regions import RegionStage
from mining.toyworld.make import iter_world

TOY_CLIP = Path(__file__).resolve().parents[1] / "mining" / "toyworld" / "weights" / "clip"


def ellipse_masks(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """bool[count, size, size]: ellipses whose areas run log-uniformly from 0.05% to 25% of the frame (what a
    teacher's top-100 looks like: many small parts, a few large wholes), rotated, possibly cut by the border."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    masks = np.zeros((count, size, size), bool)
    for i in range(count):
        area = size * size * np.exp(rng.uniform(np.log(5e-4), np.log(0.25)))
        aspect = rng.uniform(0.4, 2.5)
        a, b = np.sqrt(area * aspect / np.pi), np.sqrt(area / aspect / np.pi)
        cy, cx = rng.uniform(0, size, 2)
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        masks[i] = (u / a) ** 2 + (v / b) ** 2 <= 1
        if not masks[i].any():   # a sliver off the frame: keep one pixel so every mask is non-empty
            masks[i, int(min(cy, size - 1)), int(min(cx, size - 1))] = True
    return masks


def region_stage(mode: str, model: str, working_size: int, scales: list[int] | None, device: str) -> RegionStage:
    regions = {"mode": mode, "model": model, "pretrained": None}
    gpus = {"cpu": 0, "cuda": 1, "auto": "auto"}[device]   # a stage's device follows execution.regions.num_gpus
    if mode == "mask_pooling" and scales:
        regions["scales"] = scales
    if mode == "masked_crop":
        regions["crop_fit"] = "stretch"
    stage = RegionStage.from_config(build_config({"source": {"working_size": working_size}, "regions": regions,
                                                  "execution": {"regions": {"num_gpus": gpus}}}))
    stage.setup()
    return stage


def time_mode(stage: RegionStage, images: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Seconds to embed every mask of every image (after one warm-up image)."""
    stage.region_embeddings(images[0], masks[0][:4])
    if stage.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for image, m in zip(images, masks):
        stage.region_embeddings(image, m)   # returns numpy: the device work is finished when it returns
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="convnext_base_w", help="an open_clip convnext model name (random weights)")
    ap.add_argument("--toy", action="store_true",
                    help="the toy world's shipped CLIP (its weights) at the demo's 128-px frame")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--masks", type=int, default=100, help="masks per image")
    ap.add_argument("--working-size", type=int, default=None, help="image side (default 1024; --toy: 128)")
    ap.add_argument("--scales", type=int, nargs="+", default=None,
                    help="pooling sizes (regions.scales; default: the working size)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--modes", nargs="+", default=["mask_pooling", "masked_crop"],
                    choices=["mask_pooling", "masked_crop"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model = f"local-dir:{TOY_CLIP}" if args.toy else args.model
    size = args.working_size or (128 if args.toy else 1024)
    rng = np.random.default_rng(0)
    scenes = iter_world(seed=0, shards=1, per_shard=args.images, size=size)
    images = [scene.image for _, _, scene, _ in scenes]
    masks = [ellipse_masks(rng, args.masks, size) for _ in images]

    rows = {}
    for mode in args.modes:
        stage = region_stage(mode, model, size, args.scales, args.device)
        seconds = time_mode(stage, images, masks)
        rows[mode] = {"seconds": round(seconds, 3), "images_per_second": round(len(images) / seconds, 4),
                      "masks_per_second": round(len(images) * args.masks / seconds, 2),
                      "scales": stage.scales()}
        device = str(stage.device)
        del stage
    result = {"model": "toy world CLIP (" + str(TOY_CLIP) + ")" if args.toy else args.model,
              "device": device, "torch_threads": torch.get_num_threads(), "images": len(images),
              "masks_per_image": args.masks, "working_size": size, "modes": rows}
    if len(rows) == 2:
        result["pooling_speedup"] = round(rows["mask_pooling"]["images_per_second"]
                                          / rows["masked_crop"]["images_per_second"], 2)
    if args.json:
        print(json.dumps(result))
        return
    print(f"\n{result['model']}, {device} ({result['torch_threads']} torch threads), {len(images)} images of "
          f"{size} px, {args.masks} masks each\n")
    print("| mode | scales | images/s | masks/s | seconds |")
    print("|---|---|---:|---:|---:|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['scales']} | {r['images_per_second']:.3f} | {r['masks_per_second']:.1f} | "
              f"{r['seconds']:.1f} |")
    if "pooling_speedup" in result:
        print(f"\ndense mask pooling is {result['pooling_speedup']:.1f}x the images/s of masked crops")


if __name__ == "__main__":
    main()
