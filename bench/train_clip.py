"""Model A on the toy world: does adapting the shipped toy CLIP to masked crops of its own mined pairs help?

Mines a training world (seed 7,100,000: far from the demo/test/benchmark seeds 0 and 1) with the demo
config, trains the mask-adapted CLIP on its pairs (configs/train_clip_toyworld.yaml, local executor), and
scores region top-1 (Uni-OVSeg Table 4's protocol, `mining.evaluation.region_top1`: every ground-truth mask of
a held-out world, seed 0, classified against all category names) for the shipped and the adapted CLIP.

    .venv/bin/python bench/train_clip.py                         # 4 x 32 training images, 120 steps
    .venv/bin/python bench/train_clip.py --per-shard 64 --steps 300 --json
    .venv/bin/python bench/train_clip.py --scaling 10 --steps 60    # + samples/s and peak RSS at 1x and 10x data

With --scaling K the mined output is also grown K times (its shards copied under new names, records still
pointing at the same input shards) and the trainer is run on 1x and Kx in fresh processes for the same number
of steps, each reporting its training samples/s and its own peak RSS: the reader streams shard by shard, so
both should stay flat as the data grows.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mining.config import build_config
from mining.evaluation.ground_truth import load_ground_truth
from mining.evaluation.region_top1 import RegionTop1
from mining.pipeline import run_mining
from mining.sources.decode import decode_image
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.sinks.reader import shard_files
from mining.sources.uris import expand_inputs
from mining.toyworld.demo import demo_config
from mining.toyworld.make import make_world
from mining.train.clip_trainer import train_clip
from mining.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]


def region_top1(cfg, world: dict) -> dict:
    """Region top-1 on the ground-truth masks of `world`, in the working frame `cfg` decodes to."""
    gt = load_ground_truth(world["ground_truth"])
    scorer = RegionTop1(cfg, gt)
    for uri in expand_inputs([world["shards_uri"]]):
        for sample in read_shard(uri):
            ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
            if ext and sample.key in gt.images:
                pixels, _ = decode_image(sample.members[ext], cfg.source.max_image_pixels, cfg.source.working_size)
                scorer(pixels, gt.images[sample.key])
    return scorer.to_json()


def grown_output(mined: str, factor: int, dst: Path) -> str:
    """A copy of a local mined output with every committed shard present `factor` times (new stems)."""
    if dst.exists():
        return str(dst)
    shutil.copytree(mined, dst)
    for tar in sorted((dst / "shards").glob("*.tar")):
        for k in range(1, factor):
            shutil.copy(tar, tar.with_name(f"{tar.stem}-copy{k}.tar"))
            shutil.copy(dst / "_done" / f"{tar.stem}.json", dst / "_done" / f"{tar.stem}-copy{k}.json")
    return str(dst)


TRAIN_CHILD = """
import json, resource, sys
from mining.train.clip_trainer import train_clip
from mining.train.config import load_train_config
cfg = load_train_config(sys.argv[1], sys.argv[4:])
record = train_clip(cfg, [sys.argv[2]], sys.argv[3])
print(json.dumps({"samples_per_s": record["samples_per_s"], "seconds": record["seconds"],
                  "pairs": record["counts"]["scan"]["pairs"],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def scaling(mined: str, work: Path, factor: int, overrides: list[str]) -> list[dict]:
    """Train on 1x and `factor`x the data in fresh processes: samples/s and peak RSS of each."""
    rows = []
    for k in (1, factor):
        data = mined if k == 1 else grown_output(mined, k, work / f"train-mined-x{k}")
        out = subprocess.run([sys.executable, "-c", TRAIN_CHILD, str(ROOT / "configs" / "train_clip_toyworld.yaml"),
                              data, str(work / f"clip-x{k}"), *overrides], capture_output=True, text=True, check=True)
        rows.append({"data": f"{k}x", **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=32)
    ap.add_argument("--train-seed", type=int, default=7_100_000)
    ap.add_argument("--eval-images", type=int, default=128, help="held-out world seed 0, 4 shards")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of configs/train_clip_toyworld.yaml")
    ap.add_argument("--mining-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of the demo mining config (e.g. match.min_margin=null)")
    ap.add_argument("--scaling", type=int, default=0, metavar="K",
                    help="also train on 1x and Kx the mined data: samples/s and peak RSS of each (0: skip)")
    ap.add_argument("--work", help="working directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="ovmine-train-bench-"))
    mining_cfg = demo_config(["execution.executor=local", *args.mining_set])
    t0 = time.time()
    train_world = make_world(str(work / "train-world"), args.shards, args.per_shard, args.train_seed,
                             progress=False, overwrite=True)
    mined = str(work / "train-mined")
    if not shard_files(mined):
        run_mining(mining_cfg, [train_world["shards_uri"]], mined)
    mining_seconds = time.time() - t0
    eval_world = make_world(str(work / "eval-world"), 4, args.eval_images // 4, 0, progress=False,
                            overwrite=True)   # a --work rerun makes the same world again

    cfg = load_train_config(ROOT / "configs" / "train_clip_toyworld.yaml", [f"steps={args.steps}", *args.overrides])
    record = train_clip(cfg, [mined], work / "adapted-clip")
    shipped = region_top1(mining_cfg, eval_world)
    adapted_cfg = build_config(mining_cfg.resolved(), [f"regions.model={record['model']}", "regions.pretrained=null"])
    adapted = region_top1(adapted_cfg, eval_world)
    result = {
        "train_world": {"seed": args.train_seed, "images": train_world["images"]},
        "pairs": record["counts"]["scan"]["pairs"], "nouns": len(record["vocabulary"]),
        "mining_seconds": round(mining_seconds, 1),
        "steps": record["steps"], "samples_per_step": record["samples_per_step"],
        "loss": [record["first_loss"], record["final_loss"]],
        "train_samples_per_s": record["samples_per_s"], "train_seconds": record["seconds"],
        "eval_world": {"seed": 0, "images": eval_world["images"], "masks": shipped["masks"],
                       "chance": shipped["chance"]},
        "region_top1": {"shipped": shipped["top1"], "adapted": adapted["top1"]},
        "per_category": {name: [shipped["per_category"][name], adapted["per_category"].get(name)]
                         for name in shipped["per_category"]},
        "model": record["model"],
    }
    if args.scaling:
        result["scaling"] = scaling(mined, work, args.scaling, [f"steps={args.steps}", *args.overrides])
    if args.json:
        print(json.dumps(result))
        return
    print(f"training world seed {args.train_seed}: {train_world['images']} images -> {result['pairs']} pairs, "
          f"{result['nouns']} nouns (mined in {result['mining_seconds']} s)")
    print(f"trained {result['steps']} steps x {result['samples_per_step']} crops: loss {result['loss'][0]} -> "
          f"{result['loss'][1]}, {result['train_samples_per_s']} samples/s, {result['train_seconds']} s")
    print(f"region top-1 on held-out world seed 0 ({eval_world['images']} images, {shipped['masks']} masks, "
          f"chance {shipped['chance']:.1%}): shipped {shipped['top1']:.1%}, adapted {adapted['top1']:.1%}")
    print(f"  {'category':<12}{'shipped':>9}{'adapted':>9}")
    for name, (a, b) in result["per_category"].items():
        print(f"  {name:<12}{a:>9.1%}{(b or 0):>9.1%}")
    for row in result.get("scaling", []):
        print(f"data {row['data']:>4} ({row['pairs']} pairs): {row['samples_per_s']} samples/s, "
              f"peak RSS {row['peak_rss_mb']} MB, {row['seconds']} s")


if __name__ == "__main__":
    main()
