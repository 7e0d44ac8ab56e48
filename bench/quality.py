"""Pair quality on a fixed toy world: precision and recall against its ground truth for the choices the
papers argue about. Every row is the demo config with one thing changed.

    .venv/bin/python bench/quality.py                    # 4 shards x 32 images, world seed 0
    .venv/bin/python bench/quality.py --per-shard 64 --json

Runs use the local executor (same records as Ray, tested), so the figures are about pairs, not start-up.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mining.evaluation.run import evaluate
from mining.pipeline import run_mining
from mining.toyworld.demo import demo_config
from mining.toyworld.make import make_world

NO_FILTERS = ["match.min_similarity=null", "match.min_margin=null", "match.min_probability=null"]
VARIANTS: dict[str, list[str]] = {
    "demo config (trained Mask2Former, Hungarian per caption, stretched crops, similarity and margin filters)": [],
    "per-entity argmax instead of Hungarian": ["match.method=argmax"],
    "Hungarian one-to-one over the whole image instead of per caption": ["match.one_to_one=per_image"],
    "Hungarian without counted plurals ('two stars' takes one mask)": ["match.use_counts=false"],
    "padded crops instead of stretched": ["regions.crop_fit=pad"],
    "two crop contexts (box x1.0 and x1.5) instead of one": ["regions.crop_context=[1.0, 1.5]"],
    # pooling's own operating point, chosen on world seed 1 with bench/margin_sweep.py (94.6% there)
    "dense mask pooling at 384 px instead of masked crops, Hungarian per image, margin >= 0.1": [
        "regions.mode=mask_pooling", "regions.scales=[384]", "match.one_to_one=per_image", "match.min_margin=0.1"],
    "no confidence filters": NO_FILTERS,
    "Felzenszwalb teacher instead of the trained one": ["teacher.kind=felzenszwalb"],
    "Felzenszwalb teacher, no confidence filters": ["teacher.kind=felzenszwalb", *NO_FILTERS],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="world seed")
    ap.add_argument("--only", nargs="*", help="substrings of the variants to run")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every variant")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(str(Path(tmp) / "world"), args.shards, args.per_shard, args.seed, progress=False)
        for n, (name, changes) in enumerate(VARIANTS.items()):
            if args.only and not any(s in name for s in args.only):
                continue
            cfg = demo_config(["execution.executor=local", *changes, *args.overrides])
            out = str(Path(tmp) / f"mined-{n}")
            manifest = run_mining(cfg, [world["shards_uri"]], out)
            report = evaluate(out, world["ground_truth"], region_top1=True, progress=False)
            rows.append({"variant": name, "changes": changes, "pairs": report["pairs"],
                         "precision": report["precision"], "recall": report["recall"],
                         "noun_recall": report["noun_recall"], "region_top1": report["region_top1"]["top1"],
                         "images_per_second": manifest["images_per_second"]})
            if not args.json:
                print(f"done: {name}", flush=True)
    if args.json:
        print(json.dumps({"world": {"seed": args.seed, "images": world["images"]}, "rows": rows}))
        return
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"   # noqa: E731
    print(f"\ntoy world seed {args.seed}, {world['images']} images; precision/recall in %, mask IoU >= 0.5\n")
    print("| variant | pairs | precision | recall | noun recall | region top-1 | images/s (local) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['pairs']} | {pct(r['precision'])} | {pct(r['recall'])} | "
              f"{pct(r['noun_recall'])} | {pct(r['region_top1'])} | {r['images_per_second']:.1f} |")


if __name__ == "__main__":
    main()
