"""Pairs at each inference precision against fp32's: the toy world mined with the shipped models at fp32, tf32,
bf16 and fp16 (execution.teacher/regions.precision), each scored against the ground truth and compared pair by
pair with the fp32 run (the same pair: same image and noun, mask IoU >= 0.9). On the CPU bf16 and fp16 run
under CPU autocast and tf32 is fp32; on a GPU (--device cuda) each is what the GPU does.

    .venv/bin/python bench/precision.py                       # world seed 2026120, 4 shards x 32 images
    .venv/bin/python bench/precision.py --device cuda --json  # on a GPU machine (bench/gpu.sh runs it)

Aim: pairs identical to fp32's >= 98%, precision and recall within 0.5 point.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mining.evaluation.agreement import pair_agreement
from mining.evaluation.run import evaluate
from mining.pipeline import run_mining
from mining.toyworld.demo import demo_config
from mining.toyworld.make import make_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=32)
    ap.add_argument("--seed", type=int, default=2026120, help="world seed (an evaluation seed, never trained on)")
    ap.add_argument("--precisions", default="fp32,tf32,bf16,fp16",
                    help="the first is the reference; TEACHER:REGIONS sets the two stages apart (bf16:fp32)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    gpus = 1 if args.device == "cuda" else 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(str(Path(tmp) / "world"), args.shards, args.per_shard, args.seed, progress=False)
        for precision in args.precisions.split(","):
            mined = str(Path(tmp) / precision.replace(":", "-"))
            teacher, _, regions = precision.partition(":")
            cfg = demo_config(["execution.executor=local", f"execution.teacher.precision={teacher}",
                               f"execution.regions.precision={regions or teacher}",
                               f"execution.teacher.num_gpus={gpus}", f"execution.regions.num_gpus={gpus}"])
            start = time.perf_counter()
            manifest = run_mining(cfg, [world["shards_uri"]], mined)
            seconds = time.perf_counter() - start
            report = evaluate(mined, world["ground_truth"], progress=False)
            row = {"precision": precision, "pairs": report["pairs"], "pair_precision": report["precision"],
                   "recall": report["recall"], "seconds": round(seconds, 1),
                   "model_seconds": {s: manifest["timings"].get(s) for s in ("teacher", "regions")}}
            if rows:
                row.update(pair_agreement(str(Path(tmp) / rows[0]["precision"].replace(":", "-")), mined))
            rows.append(row)
    if args.json:
        print(json.dumps({"device": args.device, "world": {"seed": args.seed, "images": world["images"]},
                          "rows": rows}))
        return
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"   # noqa: E731
    print(f"\ntoy world seed {args.seed}, {world['images']} images, shipped models on {args.device}\n")
    print(f"{'precision':<12}{'pairs':>7}{'same as fp32':>14}{'pair prec. %':>14}{'recall %':>10}"
          f"{'teacher s':>11}{'regions s':>11}")
    for r in rows:
        same = "reference" if "agreement" not in r else f"{pct(r['agreement'])}%"
        print(f"{r['precision']:<12}{r['pairs']:>7}{same:>14}{pct(r['pair_precision']):>14}{pct(r['recall']):>10}"
              f"{r['model_seconds']['teacher'] or 0:>11.1f}{r['model_seconds']['regions'] or 0:>11.1f}")


if __name__ == "__main__":
    main()
