"""Close the loop on the toy world: mine a training world -> adapt CLIP on what it holds -> re-mine the training
world with the adapted CLIP -> adapt again, for --rounds rounds. After each round the adapted CLIP is scored on a
held-out evaluation world (seed 0; training worlds use other seeds): region top-1 on its ground-truth masks, and
the demo config's pairs when mining it with `--set regions.model=local-dir:...` (precision, recall).

The training world is mined with the confidence filters off (`match.min_similarity=null match.min_margin=null`),
so every image keeps all its masks and nouns for the grounding loss; the pair loss applies the demo's thresholds
at read time (`filters.*` of configs/train_clip_toyworld.yaml, see --set). The training pairs of round r come
from mining with round r-1's CLIP; what round r fine-tunes is `--from`: `previous` (the default) fine-tunes round
r-1's model further, as a self-training loop does; `shipped` starts each round from the shipped CLIP again, so
that a round's errors do not compound (only its pairs carry the previous round's knowledge).

    .venv/bin/python bench/self_training.py --rounds 2
    .venv/bin/python bench/self_training.py --rounds 3 --from shipped --set grounding.weight=1 --set steps=300 --json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_clip import region_top1  # noqa: E402  (the same scorer as bench/train_clip.py)

from mining.evaluation.run import evaluate  # noqa: E402
from mining.pipeline import run_mining  # noqa: E402
from mining.toyworld.demo import demo_config  # noqa: E402
from mining.toyworld.make import make_world  # noqa: E402
from mining.train.clip_trainer import train_clip  # noqa: E402
from mining.train.config import load_train_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UNFILTERED = ["match.min_similarity=null", "match.min_margin=null"]
SHIPPED_CLIP = demo_config([]).regions.model   # local-dir: the toy CLIP shipped in mining/toyworld/weights


def with_model(overrides: list[str], model: str | None) -> list[str]:
    return overrides + ([f"regions.model={model}", "regions.pretrained=null"] if model else [])


def score_eval(eval_world: dict, work: Path, name: str, model: str | None) -> dict:
    """Mine the evaluation world with the demo config (and `model`), score its pairs and the region top-1."""
    cfg = demo_config(with_model(["execution.executor=local"], model))
    out = str(work / f"eval-mined-{name}")
    run_mining(cfg, [eval_world["shards_uri"]], out)
    report = evaluate(out, eval_world["ground_truth"], progress=False)
    top1 = region_top1(cfg, eval_world)
    return {"pairs": report["pairs"], "precision": report["precision"], "recall": report["recall"],
            "region_top1": top1["top1"], "per_category": top1["per_category"]}


def train_pairs_quality(mined: str, train_world: dict, cfg_filters: dict) -> dict:
    """Precision/recall of the training pairs the pair loss will read (the demo's thresholds, read-time)."""
    report = evaluate(mined, train_world["ground_truth"], progress=False)
    return {"pairs_unfiltered": report["pairs"], "precision_unfiltered": report["precision"],
            "filters": cfg_filters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--train-seed", type=int, default=7_100_000)
    ap.add_argument("--eval-images", type=int, default=128, help="held-out world seed 0, 4 shards")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of configs/train_clip_toyworld.yaml")
    ap.add_argument("--from", dest="start", choices=["previous", "shipped"], default="previous",
                    help="what each round fine-tunes: the previous round's CLIP, or the shipped one again")
    ap.add_argument("--work", help="working directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="ovmine-self-training-"))
    train_world = make_world(str(work / "train-world"), args.shards, args.per_shard, args.train_seed,
                             progress=False, overwrite=True)
    eval_world = make_world(str(work / "eval-world"), 4, args.eval_images // 4, 0, progress=False,
                            overwrite=True)   # a --work rerun makes the same world again
    cfg = load_train_config(ROOT / "configs" / "train_clip_toyworld.yaml",
                            ["filters.min_similarity=0.2", "filters.min_margin=0.25", *args.overrides])
    rows = [{"round": 0, "model": "shipped", **score_eval(eval_world, work, "r0", None)}]
    if not args.json:
        print_row(rows[0], header=True)
    model = None
    for r in range(1, args.rounds + 1):
        t0 = time.time()
        mined = str(work / f"train-mined-r{r}")
        run_mining(demo_config(with_model(["execution.executor=local", *UNFILTERED], model)),
                   [train_world["shards_uri"]], mined)
        quality = train_pairs_quality(mined, train_world, cfg.filters.model_dump())
        # the mined run's CLIP (the previous round's) is what training starts from unless told otherwise
        start = {} if args.start == "previous" else {"model": SHIPPED_CLIP, "pretrained": None}
        record = train_clip(cfg.model_copy(update={"regions": cfg.regions | start}), [mined],
                            work / f"clip-r{r}")
        model = record["model"]
        scan = record["counts"]["scan"]
        rows.append({"round": r, "model": model, "started_from": record["started_from"]["model"],
                     "train_pairs": scan["pairs"] - scan["filtered"], **quality,
                     "train_samples_per_s": record["samples_per_s"], "loss": [record["first_loss"],
                                                                              record["final_loss"]],
                     **score_eval(eval_world, work, f"r{r}", model), "seconds": round(time.time() - t0, 1)})
        if not args.json:
            print_row(rows[-1])
    if args.json:
        print(json.dumps({"train_seed": args.train_seed, "eval_seed": 0, "from": args.start, "config": cfg.resolved(),
                          "rounds": rows}))


def print_row(row: dict, header: bool = False) -> None:
    if header:
        print(f"{'round':>5} {'train pairs':>11} {'eval pairs':>10} {'precision':>9} {'recall':>7} "
              f"{'region top-1':>12}")
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"   # noqa: E731
    print(f"{row['round']:>5} {row.get('train_pairs', '-'):>11} {row['pairs']:>10} {pct(row['precision']):>9} "
          f"{pct(row['recall']):>7} {pct(row['region_top1']):>12}", flush=True)


if __name__ == "__main__":
    main()
