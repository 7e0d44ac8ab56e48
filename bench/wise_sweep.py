"""WiSE-FT's alpha for Model A, chosen on a tuning world (issue 21): how much of the shipped CLIP's weights to
keep in the adapted one (`wise_ft`, configs/train_clip_toyworld.yaml).

Takes the models a `bench/things.py --unseen ... --work DIR` run trained, rewrites a copy of each for every
alpha the way a user would (`ovmine train clip` again with `--set wise_ft=ALPHA`: it takes the last checkpoint
and writes the folder, training nothing), and scores each on a tuning world (seed 1 by default, the seed the
demo's margin was tuned on; never the evaluation world of bench/things.py): region top-1 over the seen and the
held-out (unseen) categories, and the precision and recall of the pairs each mines.

    .venv/bin/python bench/things.py --unseen star,heart,sand --work /tmp/things-u
    .venv/bin/python bench/wise_sweep.py --work /tmp/things-u --unseen star,heart,sand
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from things import deny_list, groups, held_out, scored, trained

from mining.evaluation.per_class import mean
from mining.toyworld.make import make_world


def summary(figures: dict, unseen: list[str]) -> dict:
    named = groups(unseen)
    seen = [n for group, names in named.items() if group != "unseen" for n in names]
    return {"seen": mean([figures["per_category"][n]["top1"] for n in seen]),
            "unseen": mean([figures["per_category"][n]["top1"] for n in named.get("unseen", [])]),
            "overall": figures["top1"], "precision": figures["precision"], "recall": figures["recall"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="a bench/things.py --work folder with its --unseen models")
    ap.add_argument("--unseen", required=True, help="the categories that run held out")
    ap.add_argument("--models", default="pairs,grounding")
    ap.add_argument("--alphas", default="0.5,0.7,0.85,1")
    ap.add_argument("--steps", type=int, default=300, help="the things run's steps")
    ap.add_argument("--seed", type=int, default=1, help="the tuning world")
    ap.add_argument("--per-shard", type=int, default=32, help="the tuning world: 4 shards of this")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work, unseen = Path(args.work), held_out(args.unseen)
    tag = "-without-" + "-".join(unseen)
    tune = work / f"wise-seed-{args.seed}"
    world = make_world(str(tune / "world"), 4, args.per_shard, args.seed, progress=False, overwrite=True)
    deny = [f"filters.nouns_deny={json.dumps(deny_list(unseen))}"]
    extra = {"pairs": deny, "grounding": ["grounding.weight=1.0", *deny]}
    rows = {"shipped": summary(scored(None, world, tune, "shipped"), unseen)}
    for name in args.models.split(","):
        for alpha in [float(a) for a in args.alphas.split(",")]:
            folder = tune / f"clip-{name}-{alpha}"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(work / f"clip-{name}{tag}", folder)
            model = trained(str(work / "train-mined"), folder, args.steps, [*extra[name], f"wise_ft={alpha}"])
            rows[f"{name} {alpha}"] = summary(scored(model, world, tune, f"{name}-{alpha}"), unseen)
    if args.json:
        print(json.dumps({"seed": args.seed, "images": world["images"], "unseen": unseen, "rows": rows}))
        return
    print(f"tuning world seed {args.seed} ({world['images']} images); held out of training: {', '.join(unseen)}")
    print(f"{'model':<16}" + "".join(f"{h:>10}" for h in ("seen", "unseen", "overall", "precision", "recall")))
    for name, row in rows.items():
        print(f"{name:<16}" + "".join(f"{row[k]:>10.1%}" for k in ("seen", "unseen", "overall", "precision",
                                                                     "recall")))


if __name__ == "__main__":
    main()
