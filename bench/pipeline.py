"""Steady-state Ray throughput against the ideal on this machine, and what the driver carries.

    .venv/bin/python bench/pipeline.py                      # demo config, a toy world of 32 x 32 = 1,024 images
    .venv/bin/python bench/pipeline.py --shards 64 --json
    .venv/bin/python bench/pipeline.py --set execution.teacher.concurrency=2

1. Each step alone: read, the five stages and the write run in this process on one torch thread over
   `--sample` images after a warm-up shard; their CPU seconds per image add up to the work one image costs, and
   the ideal throughput is cores / that.
2. The whole world mined on a local Ray (as `ovmine mine` does). Its throughput is taken over the mining alone
   (the manifest's `wall_mining`: from the moment every model stage has an actor ready to the end); Ray's
   start-up and the model loading before it are reported apart.
3. efficiency = steady images/s / ideal images/s (aim >= 0.85). The driver's share: bytes it received per image
   (aim <= 2 KB) and its CPU seconds per 1,000 images, from the run's manifest.
On a GPU machine the teacher and region stages' busy share of the steady stretch is printed too (aim >= 0.85).
Figures, not assertions: nothing here fails on a slow machine.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from mining.pipeline import run_mining
from mining.stages import build_stages
from mining.stages.read import read_chunks
from mining.stages.write import ShardWriter
from mining.config import load_config
from mining.toyworld.demo import DEMO_CONFIG
from mining.toyworld.make import make_world


def cpu_seconds_per_image(cfg, shard_uris: list[str], sample: int, out: str) -> dict[str, float]:
    """CPU seconds per image of read, each stage and write, each measured alone in this process. The first
    shard warms up (torch's first calls, caches) and is not counted: the figures are the steady cost."""
    torch.set_num_threads(1)
    stages = build_stages(cfg)
    for stage in stages:
        stage.prepare()
    writer = ShardWriter.from_config(cfg, out, cfg.config_hash())
    spent = {"read": 0.0, **{s.name: 0.0 for s in stages}, "write": 0.0}
    images = 0
    for shard, uri in enumerate(shard_uris):
        if images >= sample:
            break
        if shard == 0:   # the warm-up
            for chunk in read_chunks(writer.output.at(uri), None, cfg.execution.chunk_size):
                for stage in stages:
                    stage.run(chunk.samples)
                writer.write(chunk)
            continue
        before = time.process_time()
        chunks = read_chunks(writer.output.at(uri), None, cfg.execution.chunk_size)
        spent["read"] += time.process_time() - before
        for chunk in chunks:
            for stage in stages:
                before = time.process_time()
                stage.run(chunk.samples)
                spent[stage.name] += time.process_time() - before
            before = time.process_time()
            writer.write(chunk)
            spent["write"] += time.process_time() - before
            images += len(chunk.samples)
    return {name: seconds / images for name, seconds in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEMO_CONFIG))
    ap.add_argument("--shards", type=int, default=32)
    ap.add_argument("--per-shard", type=int, default=32)
    ap.add_argument("--sample", type=int, default=128, help="images each step is timed on alone")
    ap.add_argument("--cores", type=float, default=float(os.cpu_count() or 1))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(str(Path(tmp) / "world"), args.shards, args.per_shard, seed=3, progress=False)
        shards = sorted(str(p) for p in (Path(tmp) / "world" / "shards").glob("*.tar"))
        cfg = load_config(args.config, [*args.overrides, "execution.executor=ray"])
        per_image = cpu_seconds_per_image(cfg, shards, args.sample, str(Path(tmp) / "alone"))
        ideal = args.cores / sum(per_image.values())
        start = time.perf_counter()
        manifest = run_mining(cfg, [world["shards_uri"]], str(Path(tmp) / "mined"))
        wall = time.perf_counter() - start
        timings, driver = manifest["timings"], manifest["driver"]
        span = timings["wall_mining"]
        rate = manifest["totals"]["images_in"] / span
        gpu_busy = None
        if torch.cuda.is_available():
            model_seconds = sum(timings.get(name, 0.0) for name in ("teacher", "regions"))
            gpu_busy = model_seconds / manifest["totals"]["images_in"] * rate   # busy seconds per second, steady
        result = {
            "config": args.config, "overrides": args.overrides, "images": manifest["totals"]["images_in"],
            "cores": args.cores, "cpu_ms_per_image": {k: round(1000 * v, 2) for k, v in per_image.items()},
            "ideal_images_per_s": round(ideal, 2), "steady_images_per_s": round(rate, 2),
            "steady_seconds": round(span, 1), "efficiency": round(rate / ideal, 3),
            "wall_seconds": round(wall, 1), "ray_startup_s": timings.get("wall_ray_startup"),
            "model_loading_s": timings.get("wall_model_loading"), "driver": driver, "gpu_busy": gpu_busy,
        }
    if args.json:
        print(json.dumps(result))
        return
    costs = "  ".join(f"{k} {v:.1f}" for k, v in result["cpu_ms_per_image"].items())
    print(f"{result['images']} images, {args.config} {' '.join(args.overrides)}")
    print(f"  each step alone, CPU ms per image: {costs}  (sum {1000 * sum(per_image.values()):.1f})")
    print(f"  ideal on {args.cores:g} cores          {ideal:8.2f} images/s")
    print(f"  Ray, steady state            {rate:8.2f} images/s  (over the mining's {span:.1f} s)")
    print(f"  efficiency                   {rate / ideal:8.3f}   (aim >= 0.85)")
    print(f"  before the steady state      Ray start-up {result['ray_startup_s']} s, model loading "
          f"{result['model_loading_s']} s; whole run {wall:.1f} s")
    print(f"  driver received              {driver['bytes_per_image']:8.1f} bytes per image (aim <= 2048)")
    print(f"  driver CPU                   {driver['cpu_seconds_per_1000_images']:8.3f} s per 1,000 images")
    if gpu_busy is not None:
        print(f"  GPU stages busy              {gpu_busy:8.3f} of the steady stretch (aim >= 0.85)")


if __name__ == "__main__":
    main()
