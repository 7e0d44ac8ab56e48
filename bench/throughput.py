"""Images/s of a config on generated shards, per executor, with per-stage seconds.

    .venv/bin/python bench/throughput.py --config configs/tiny.yaml --shards 4 --per-shard 32

Wall time includes Ray start-up and model loading on the workers, as a user's run does; the stage seconds
are work only. Figures, not assertions: nothing here fails on a slow machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mining.config import load_config
from mining.pipeline import run_mining
from mining.toyworld.make import make_shards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=32)
    ap.add_argument("--size", type=int, default=128, help="generated image side")
    ap.add_argument("--executors", nargs="+", default=["local", "ray"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        make_shards(Path(tmp) / "in", shards=args.shards, per_shard=args.per_shard, size=args.size)
        rows = []
        for executor in args.executors:
            cfg = load_config(args.config, [*args.overrides, f"execution.executor={executor}"])
            start = time.perf_counter()
            manifest = run_mining(cfg, [str(Path(tmp) / "in")], str(Path(tmp) / f"out-{executor}"))
            wall = time.perf_counter() - start
            t = manifest["totals"]
            rows.append({"executor": executor, "images": t["images_in"], "pairs": t["pairs"],
                         "wall_s": round(wall, 2), "images_per_s": round(t["images_in"] / wall, 2),
                         "stage_s": manifest["timings"]})
        print(f"config {args.config}  {args.shards} shards x {args.per_shard} images of {args.size}px")
        print(f"{'executor':<10}{'images':>8}{'pairs':>8}{'wall s':>9}{'images/s':>10}  stage seconds (work only)")
        for r in rows:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_s"].items())
            print(f"{r['executor']:<10}{r['images']:>8}{r['pairs']:>8}{r['wall_s']:>9.1f}{r['images_per_s']:>10.2f}  {stages}")
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
