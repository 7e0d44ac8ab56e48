"""Peak memory of `ovmine mine` on Ray for 1x and 10x the input shards: the pipeline streams, so the peak
should not grow with the number of shards.

    .venv/bin/python bench/mine_memory.py --shards 2 --per-shard 16

Each run is a fresh `ovmine mine` process; its tree (driver, Ray's daemons and workers) is sampled every
0.25 s with psutil. Printed: the driver's peak RSS and the peak of the whole tree's RSS (shared pages count once
per process, so the tree figure overstates real use; compare the two runs, not the absolute value).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from mining.toyworld.make import make_shards


def measure(cmd: list[str]) -> tuple[float, float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    driver_peak = tree_peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    rss.append(0)
            driver_peak = max(driver_peak, rss[0])
            tree_peak = max(tree_peak, sum(rss))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.25)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}")
    return driver_peak / 2**20, tree_peak / 2**20, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--per-shard", type=int, default=16)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    args = ap.parse_args()
    print(f"{'shards':>7}{'images':>8}{'wall s':>8}{'driver peak MB':>16}{'process tree peak MB':>22}")
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            shards = args.shards * scale
            make_shards(Path(tmp) / "in", shards=shards, per_shard=args.per_shard, size=128)
            cmd = [sys.executable, "-m", "mining.cli", "mine", "--config", args.config, "--input",
                   str(Path(tmp) / "in"), "--output", str(Path(tmp) / "out")]
            driver, tree, wall = measure(cmd)
            print(f"{shards:>7}{shards * args.per_shard:>8}{wall:>8.1f}{driver:>16.0f}{tree:>22.0f}")


if __name__ == "__main__":
    main()
