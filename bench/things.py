"""Things and stuff, class by class: what each CLIP makes of the toy world's objects (issue 21).

One row per category (7 things, 5 stuff), one column per model:
  shipped    the toy CLIP as shipped (mining/toyworld/weights/clip)
  pairs      adapted on the training world's mined pairs (configs/train_clip_toyworld.yaml)
  grounding  the same, with OpenSeg's grounding loss added (grounding.weight=1)
  oracle     the same training on the training world's ground truth (`ovmine toyworld oracle`): every true
             mask with its true name, the upper bound beside the others
and three figures for each, all on an evaluation world whose seed nothing was trained or tuned on:
  top-1      region top-1 on its ground-truth masks (Uni-OVSeg Table 4's protocol)
  precision, recall   of its pairs when that world is mined again with that CLIP (`ovmine eval`)
The figures are `mining.evaluation.run.evaluate`'s, the numbers `ovmine eval --region-top1` prints.
With `--unseen`, those categories (their names and synonyms) are held out of every training with a read-time
noun deny-list (`filters.nouns_deny`): no pair, grounding caption or vocabulary entry names them, as OVSeg
holds datasets out. The evaluation still asks for them by name, and the table reports them apart.

    .venv/bin/python bench/things.py                         # 256 training images, 300 steps, 128 eval images
    .venv/bin/python bench/things.py --unseen star,heart,sand --models shipped,pairs,grounding
    .venv/bin/python bench/things.py --per-shard 128 --steps 1000 --json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mining.evaluation.per_class import class_figures, class_table
from mining.evaluation.run import evaluate
from mining.pipeline import run_mining
from mining.toyworld.demo import demo_config
from mining.toyworld.make import make_world
from mining.toyworld.oracle import write_oracle
from mining.toyworld.vocab import CATEGORIES, STUFF, THINGS
from mining.train.clip_trainer import train_clip
from mining.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEED = 7_100_000   # the trainer benches' training world
EVAL_SEED = 2_026_120    # used by no training, test or tuning


def mined(cfg, world: dict, out: Path) -> str:
    run_mining(cfg, [world["shards_uri"]], str(out))   # a --work rerun finds it mined (another config: refused)
    return str(out)


def trained(data: str, out: Path, steps: int, extra: list[str]) -> str:
    cfg = load_train_config(ROOT / "configs" / "train_clip_toyworld.yaml", [f"steps={steps}", *extra])
    return train_clip(cfg, [data], out)["model"]


def scored(model: str | None, eval_world: dict, work: Path, name: str) -> dict:
    """Mine the evaluation world with `model` (None: the shipped CLIP) and score it as `ovmine eval` does."""
    overrides = ["execution.executor=local"]
    if model:
        overrides += [f"regions.model={model}", "regions.pretrained=null"]
    output = mined(demo_config(overrides), eval_world, work / f"eval-mined-{name}")
    return class_figures(evaluate(output, eval_world["ground_truth"], region_top1=True, progress=False))


def held_out(names: str | None) -> list[str]:
    """The categories named (comma-separated), checked against the toy world's."""
    if not names:
        return []
    known = {c.name: c for c in CATEGORIES}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"--unseen: no such category {', '.join(unknown)} (known: {', '.join(known)})")
    return wanted


def deny_list(categories: list[str]) -> list[str]:
    """Every noun a caption may use for these categories: `filters.nouns_deny`."""
    return sorted({n for c in CATEGORIES if c.name in categories for n in (c.name, *c.synonyms)})


def groups(unseen: list[str]) -> dict[str, list[str]]:
    seen = "seen " if unseen else ""
    return {f"{seen}things": [c.name for c in THINGS if c.name not in unseen],
            f"{seen}stuff": [c.name for c in STUFF if c.name not in unseen]} | ({"unseen": unseen} if unseen else {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--eval-per-shard", type=int, default=32, help="the evaluation world: 4 shards of this")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--models", default="shipped,pairs,grounding,oracle")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of configs/train_clip_toyworld.yaml for every training")
    ap.add_argument("--unseen", help="categories to hold out of every training (comma-separated), reported apart")
    ap.add_argument("--work", help="working directory (default: a temporary one); a rerun with the same settings "
                    "reuses what is there")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="ovmine-things-"))
    unseen = held_out(args.unseen)
    overrides = [*args.overrides, *([f"filters.nouns_deny={json.dumps(deny_list(unseen))}"] if unseen else [])]
    tag = "-without-" + "-".join(unseen) if unseen else ""   # a --work rerun keeps each setting's models apart
    start = time.time()
    train_world = make_world(str(work / "train-world"), args.shards, args.per_shard, TRAIN_SEED, progress=False,
                             overwrite=True)
    eval_world = make_world(str(work / "eval-world"), 4, args.eval_per_shard, EVAL_SEED, progress=False,
                            overwrite=True)
    wanted = args.models.split(",")
    models: dict[str, str | None] = {"shipped": None}
    if {"pairs", "grounding"} & set(wanted):
        train_mined = mined(demo_config(["execution.executor=local"]), train_world, work / "train-mined")
        if "pairs" in wanted:
            models["pairs"] = trained(train_mined, work / f"clip-pairs{tag}", args.steps, overrides)
        if "grounding" in wanted:
            models["grounding"] = trained(train_mined, work / f"clip-grounding{tag}", args.steps,
                                          ["grounding.weight=1.0", *overrides])
    if "oracle" in wanted:
        oracle = work / "train-oracle"
        write_oracle(work / "train-world", str(oracle))
        models["oracle"] = trained(str(oracle), work / f"clip-oracle{tag}", args.steps, overrides)
    result = {"train_world": {"seed": TRAIN_SEED, "images": train_world["images"]},
              "eval_world": {"seed": EVAL_SEED, "images": eval_world["images"]}, "steps": args.steps,
              "unseen": unseen, "held_out_nouns": deny_list(unseen),
              "models": {name: scored(model, eval_world, work, name + (tag if model else ""))
                         for name, model in models.items() if name in wanted},
              "seconds": round(time.time() - start)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"training world seed {TRAIN_SEED} ({train_world['images']} images), {args.steps} steps of "
          f"configs/train_clip_toyworld.yaml; evaluation world seed {EVAL_SEED} ({eval_world['images']} images); "
          f"{result['seconds']} s" + (f"; held out of training: {', '.join(deny_list(unseen))}" if unseen else ""))
    print(class_table(result["models"], groups(unseen)))


if __name__ == "__main__":
    main()
