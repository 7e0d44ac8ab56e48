"""Precision and recall of Hungarian (one-to-one per caption or per image) vs per-entity argmax across margin
thresholds, on one toy world: how the
demo's `match.min_margin` was chosen (on world seed 1; bench/quality.py reports seed 0).

    .venv/bin/python bench/margin_sweep.py                 # world seed 1, 4 shards x 32 images
    .venv/bin/python bench/margin_sweep.py --seed 0 --json

Each method mines once with every filter off; each threshold is then applied with `ovmine curate`
(min_similarity and min_margin, the same comparison the match stage makes) and scored by `ovmine eval`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mining.postrun.curate import CurationFilters, curate
from mining.evaluation.run import evaluate
from mining.pipeline import run_mining
from mining.toyworld.demo import demo_config
from mining.toyworld.make import make_world

OFF = ["match.min_similarity=null", "match.min_margin=null", "match.min_probability=null"]
MARGINS = [0.0, 0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3]
METHODS = {"Hungarian per caption": ["match.method=hungarian", "match.one_to_one=per_caption"],
           "Hungarian per image": ["match.method=hungarian", "match.one_to_one=per_image"],
           "argmax": ["match.method=argmax"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1, help="world seed")
    ap.add_argument("--min-similarity", type=float, default=0.2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="applied to both methods")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(str(Path(tmp) / "world"), args.shards, args.per_shard, args.seed, progress=False)
        for n, (method, changes) in enumerate(METHODS.items()):
            mined = str(Path(tmp) / f"mined-{n}")
            cfg = demo_config(["execution.executor=local", *changes, *OFF, *args.overrides])
            run_mining(cfg, [world["shards_uri"]], mined)
            for margin in MARGINS:
                kept = str(Path(tmp) / f"{n}-{margin}")
                curate(mined, kept, CurationFilters(min_similarity=args.min_similarity, min_margin=margin))
                report = evaluate(kept, world["ground_truth"], progress=False)
                rows.append({"method": method, "min_margin": margin, "pairs": report["pairs"],
                             "correct": report["correct_pairs"], "precision": report["precision"],
                             "recall": report["recall"]})
    if args.json:
        print(json.dumps({"world": {"seed": args.seed, "images": world["images"]}, "rows": rows}))
        return
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"   # noqa: E731
    print(f"\ntoy world seed {args.seed}, {world['images']} images, min_similarity {args.min_similarity}\n")
    print("right pairs / precision % / recall % of each method at each margin threshold\n")
    print("| min_margin | " + " | ".join(METHODS) + " |")
    print("|---:|" + "---:|" * len(METHODS))
    by = {(r["method"], r["min_margin"]): r for r in rows}
    for margin in MARGINS:
        cells = [by[(m, margin)] for m in METHODS]
        print(f"| {margin:g} | " + " | ".join(f"{c['correct']} / {pct(c['precision'])} / {pct(c['recall'])}"
                                              for c in cells) + " |")


if __name__ == "__main__":
    main()
