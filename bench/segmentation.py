"""Aim 3 of the trainer issue on the toy world: open-vocabulary mIoU of four ways to segment a held-out world.

Mines a training world (seed 7,100,000, as bench/train_clip.py: far from the demo/test/benchmark seeds 0 and 1)
with the demo config, trains the mask-adapted CLIP (configs/train_clip_toyworld.yaml) and the segmenter
(configs/train_segmenter_toyworld.yaml) on its pairs, then scores, on a held-out world (seed 0), with the
world's 12 category names as the vocabulary (`mining.evaluation.semantic`, the code `ovmine eval-seg` runs):

  (i)   teacher masks + shipped CLIP crops  (OVSeg's unadapted baseline)
  (ii)  teacher masks + adapted CLIP crops
  (iii) the trained segmenter
  (iv)  the segmenter ensembled with the adapted CLIP (OVSeg A.5, λ)

    .venv/bin/python bench/segmentation.py                      # 4 x 32 training images, 32 evaluation images
    .venv/bin/python bench/segmentation.py --seg-steps 300 --json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mining.config import PLACEHOLDERS
from mining.evaluation.semantic import evaluate_semantic
from mining.pipeline import run_mining
from mining.segmentation.variants import build_variants
from mining.sinks.reader import shard_files
from mining.toyworld.demo import demo_config
from mining.evaluation.per_class import mean
from mining.toyworld.make import make_world
from mining.toyworld.vocab import THINGS
from mining.train.clip_trainer import train_clip
from mining.train.config import load_train_config
from mining.train.segmenter_config import load_segmenter_config
from mining.train.segmenter_trainer import train_segmenter

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "mining" / "toyworld" / "demo.yaml"
NAMES = {"teacher+shipped": "(i) teacher + shipped CLIP", "teacher+adapted": "(ii) teacher + adapted CLIP",
         "segmenter": "(iii) segmenter", "segmenter+adapted": "(iv) segmenter + adapted CLIP"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=32)
    ap.add_argument("--train-seed", type=int, default=7_100_000)
    ap.add_argument("--eval-images", type=int, default=32, help="the held-out world's images, in 2 shards")
    ap.add_argument("--eval-seed", type=int, default=0,
                    help="the held-out world (2,026,120: bench/things.py's, which nothing is tuned on)")
    ap.add_argument("--clip-steps", type=int, default=120)
    ap.add_argument("--seg-steps", type=int, default=None, help="default: the toy config's steps")
    ap.add_argument("--lam", type=float, default=0.7, help="ensemble λ (OVSeg: 0.6-0.7)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of configs/train_segmenter_toyworld.yaml")
    ap.add_argument("--clip-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of configs/train_clip_toyworld.yaml (the adapted CLIP)")
    ap.add_argument("--mining-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of the demo mining config (e.g. match.min_margin=null)")
    ap.add_argument("--work", help="working directory (default: a temporary one); reused: a mined output or "
                                   "a trained model already there is not made again")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="ovmine-seg-bench-"))
    mining_cfg = demo_config(["execution.executor=local", *args.mining_set])
    t0 = time.time()
    train_world = make_world(str(work / "train-world"), args.shards, args.per_shard, args.train_seed,
                             progress=False, overwrite=True)
    mined = str(work / "train-mined")
    if not shard_files(mined):
        run_mining(mining_cfg, [train_world["shards_uri"]], mined)
    mining_seconds = time.time() - t0
    eval_world = make_world(str(work / "eval-world"), 2, max(1, args.eval_images // 2), args.eval_seed, progress=False,
                            overwrite=True)   # a --work rerun makes the same world again

    clip_dir, seg_dir = work / "adapted-clip", work / "segmenter"
    t0 = time.time()
    if not (clip_dir / "training.json").is_file():
        train_clip(load_train_config(ROOT / "configs" / "train_clip_toyworld.yaml",
                                     [f"steps={args.clip_steps}", *args.clip_set]), [mined], clip_dir)
    clip_seconds = time.time() - t0
    seg_overrides = ([f"steps={args.seg_steps}"] if args.seg_steps else []) + args.overrides
    t0 = time.time()
    if not (seg_dir / "training.json").is_file():
        train_segmenter(load_segmenter_config(ROOT / "configs" / "train_segmenter_toyworld.yaml", seg_overrides),
                        [mined], seg_dir)
    seg_seconds = time.time() - t0
    seg_record = json.loads((seg_dir / "training.json").read_text())

    t0 = time.time()
    shipped = f"local-dir:{PLACEHOLDERS['TOYWORLD_WEIGHTS'] / 'clip'}"
    variants = build_variants(model=str(seg_dir), teacher_config=str(DEMO),
                              clips=[f"shipped={shipped}", f"adapted=local-dir:{clip_dir}"], lam=args.lam)
    variants = {k: variants[k] for k in NAMES}
    report = evaluate_semantic(eval_world["ground_truth"], variants)
    eval_seconds = time.time() - t0
    figures = {k: report["variants"][k]["miou"] for k in NAMES}
    result = {
        "train_world": {"seed": args.train_seed, "images": train_world["images"]},
        "eval_world": {"seed": args.eval_seed, "images": report["images"]},
        "segmenter": {"steps": seg_record["steps"], "loss": [seg_record["first_loss"], seg_record["final_loss"]],
                      "samples_per_s": seg_record["samples_per_s"], "vocabulary": len(seg_record["vocabulary"]),
                      "pairs": seg_record["counts"]["scan"]["pairs"] - seg_record["counts"]["scan"]["filtered"]},
        "lambda": args.lam, "miou": figures,
        "iv_minus_i_points": round(100 * (figures["segmenter+adapted"] - figures["teacher+shipped"]), 1),
        "pixel_accuracy": {k: report["variants"][k]["pixel_accuracy"] for k in NAMES},
        "per_class_iou": {c: [report["variants"][k]["per_class_iou"][c] for k in NAMES] for c in report["classes"]},
        "thing_miou": {k: mean([report["variants"][k]["per_class_iou"][c.name] for c in THINGS]) for k in NAMES},
        "seconds": {"mining": round(mining_seconds, 1), "train_clip": round(clip_seconds, 1),
                    "train_segmenter": round(seg_seconds, 1), "evaluation": round(eval_seconds, 1)},
        "work": str(work),
    }
    if args.json:
        print(json.dumps(result))
        return
    s = result["segmenter"]
    print(f"training world seed {args.train_seed}: {train_world['images']} images, {s['pairs']} pairs, "
          f"{s['vocabulary']} nouns; segmenter {s['steps']} steps, loss {s['loss'][0]} -> {s['loss'][1]}, "
          f"{s['samples_per_s']} images/s")
    print(f"held-out world seed {args.eval_seed}, {report['images']} images, 12 category names; ensemble "
          f"λ = {args.lam}")
    for k, label in NAMES.items():
        print(f"  {label:<34} mIoU {100 * figures[k]:5.1f}   pixel acc {100 * result['pixel_accuracy'][k]:5.1f}")
    print(f"  (iv) - (i): {result['iv_minus_i_points']:+.1f} mIoU points (aim: +10)")
    print("  mean IoU over the 7 things: " + ", ".join(
        f"{k.split()[0]} {'-' if v is None else f'{100 * v:.1f}'}"
        for k, v in zip(NAMES.values(), result["thing_miou"].values())))
    print(f"  {'class':<10}" + "".join(f"{k.split()[0]:>8}" for k in NAMES.values()))
    for c, row in result["per_class_iou"].items():
        print(f"  {c:<10}" + "".join(f"{'-' if v is None else f'{100 * v:.1f}':>8}" for v in row))
    print("  seconds: " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()))


if __name__ == "__main__":
    main()
