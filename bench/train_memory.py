"""Training memory against shard size: peak RSS of one pass of Model A's pair stream and grounding stream over a
mined output whose single shard holds 32, then 1,024 images (each measured in a process of its own). Pictures
are decoded one at a time (`mining.sinks.images.stream_images`), so the peak should not grow with the shard;
the images are mined at a 512 px working size so that holding a shard's pictures would show.

    .venv/bin/python bench/train_memory.py                 # --sizes 32,1024 --work DIR to keep the outputs
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_pass(mined: str) -> dict:
    from mining.train.clip_trainer import crop_spec, make_plan
    from mining.regions.clip_loader import load_clip
    from mining.train.config import load_train_config
    from mining.train.data import ExampleStream, PairFilter, ShardSource
    from mining.train.grounding import ImageStream
    import torch

    cfg = load_train_config(ROOT / "configs" / "train_clip_toyworld.yaml", ["steps=1", "filters.min_similarity=null",
                                                                            "filters.min_margin=null"])
    plan = make_plan(cfg, [mined])
    clip = load_clip(plan.regions_config(), torch.device("cpu"))
    sources, crop = ShardSource.from_plan(plan.sources, None), crop_spec(plan, clip)
    # the pass's own peak: Linux resets the high-water mark on request (ru_maxrss would carry the parent's
    # over fork and exec)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = memory("VmRSS")
    start = time.perf_counter()
    crops = sum(1 for _ in ExampleStream(sources, PairFilter.from_config(cfg.filters), crop).epoch(0))
    images = sum(1 for _ in ImageStream(sources, PairFilter.from_config(cfg.filters), crop, 16).epoch(0))
    return {"crops": crops, "images": images, "seconds": round(time.perf_counter() - start, 1),
            "rss_before_mib": round(base), "peak_rss_mib": round(memory("VmHWM"))}


def memory(field: str) -> float:
    """MiB of /proc/self/status's `field` (VmRSS now, VmHWM the peak since the last reset)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,1024")
    ap.add_argument("--work")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_pass(args.one)))
        return
    from mining.config import load_config
    from mining.pipeline import run_mining
    from mining.toyworld.make import make_world

    work = Path(args.work or tempfile.mkdtemp(prefix="ovmine-train-memory-"))
    cfg = load_config(str(ROOT / "configs" / "tiny.yaml"), ["execution.executor=local", "source.working_size=512"])
    print("images per shard   crops   images   peak RSS (MiB)   before the pass   seconds")
    for n in map(int, args.sizes.split(",")):
        world = make_world(str(work / f"world-{n}"), 1, n, seed=5_000 + n, size=512, progress=False, overwrite=True)
        mined = str(work / f"mined-{n}")
        run_mining(cfg, [world["shards_uri"]], mined)
        out = subprocess.run([sys.executable, __file__, "--one", mined], capture_output=True, text=True, cwd=ROOT)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{n:>16} {row['crops']:>7} {row['images']:>8} {row['peak_rss_mib']:>16} {row['rss_before_mib']:>17} "
              f"{row['seconds']:>9}", flush=True)


if __name__ == "__main__":
    main()
