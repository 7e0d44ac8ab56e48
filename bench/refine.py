"""Caption refinement on a held-out toy world: the same world mined at the demo's settings without and with
`captions.refine` (the project's toy captioner by default), scored against the ground truth.

Figures per run: minable instances (those a caption of their image names, the refined caption counted when there
is one), pairs, right pairs (matched one to one to a true instance, `ovmine eval`'s definition), right pairs per
image, pair precision and recall; for the refined run also the pairs that came from refined captions and how many
of them are right (right pairs of the whole image minus right pairs of its pairs from its own captions).

    .venv/bin/python bench/refine.py                              # 2 x 64 images of seed 2,026,120
    .venv/bin/python bench/refine.py --model PATH --per-shard 128 --json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from mining.captions.refiner import CaptionRefiner
from mining.evaluation.ground_truth import load_ground_truth
from mining.evaluation.names import CategoryNames
from mining.evaluation.run import evaluate
from mining.evaluation.score import score_image
from mining.pipeline import run_mining
from mining.records import REFINED
from mining.sinks.layout import shard_file
from mining.sinks.reader import committed_stems, read_shard_records
from mining.sources.decode import decode_image, extract_captions
from mining.sources.shards import read_shard
from mining.toyworld.demo import demo_config
from mining.toyworld.make import make_world

ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED = 2_026_120   # used by no training, test or tuning
SHIPPED_MODEL = ROOT / "mining" / "toyworld" / "weights" / "captioner"


def minable_with_refinement(world: dict, cfg) -> int:
    """Instances a caption of their image names, the captioner's caption included (asked here for every image:
    the output keeps captions only for images with pairs)."""
    gt = load_ground_truth(world["ground_truth"])
    names = CategoryNames(gt.categories, None, cfg.entities.spacy_model)
    refiner = CaptionRefiner(cfg.captions.refine, "cpu", "fp32")
    minable = 0
    for shard in sorted(Path(world["shards_uri"]).glob("*.tar")):
        samples = list(read_shard(str(shard)))
        pixels = [decode_image(s.members["jpg"], cfg.source.max_image_pixels, cfg.source.working_size)[0]
                  for s in samples]
        refined = [t for start in range(0, len(pixels), 16) for t in refiner.refine(pixels[start:start + 16])]
        for sample, extra in zip(samples, refined):
            captions, _ = extract_captions(sample.members, cfg.source.caption_json_fields,
                                           cfg.source.captions_per_image)
            mentioned = names.mentioned(captions + ([extra] if extra else []))
            minable += sum(a["category_id"] in mentioned for a in gt.instances.get(gt.images[sample.key]["id"], []))
    return minable


def refined_pairs(output: Path, world: dict, spacy_model: str) -> dict[str, int]:
    """Pairs from refined captions, and how many right pairs they add to their images."""
    gt = load_ground_truth(world["ground_truth"])
    names = CategoryNames(gt.categories, None, spacy_model)
    count = added_right = 0
    for stem in committed_stems(str(output)):
        for record in read_shard_records(shard_file(str(output), stem)):
            refined = {i for i, source in enumerate(record.caption_sources) if source == REFINED}
            own = [p for p in record.pairs if record.entities[p.entity_index].caption_index not in refined]
            if len(own) == len(record.pairs):
                continue
            image = gt.images[record.key]

            def right(rec) -> int:
                return score_image(rec, rec.captions, image, gt, names, 0.5, gt.exhaustive).total.correct
            count += len(record.pairs) - len(own)
            added_right += right(record) - right(dataclasses.replace(record, pairs=own))
    return {"refined_pairs": count, "refined_right": added_right}


def mine_and_score(world: dict, out: Path, overrides: list[str]) -> dict:
    cfg = demo_config(["execution.executor=local", *overrides])
    started = time.time()
    run_mining(cfg, [world["shards_uri"]], str(out), progress=False)
    seconds = time.time() - started
    report = evaluate(str(out), world["ground_truth"], progress=False)
    figures = {"images": report["images"], "minable": report["minable"], "pairs": report["judged_pairs"],
               "right_pairs": report["correct_pairs"],
               "right_per_image": round(report["correct_pairs"] / report["images"], 3),
               "precision": report["precision"], "recall": report["recall"], "mining_seconds": round(seconds, 1)}
    if cfg.captions.refine is not None:
        figures |= refined_pairs(out, world, cfg.entities.spacy_model)
        figures["minable"] = minable_with_refinement(world, cfg)
        figures["recall"] = round(report["recalled"] / figures["minable"], 4) if figures["minable"] else None
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(SHIPPED_MODEL), help="the captioner (a transformers folder)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(str(Path(tmp) / "world"), args.shards, args.per_shard, args.seed, progress=False)
        runs = {"own captions": mine_and_score(world, Path(tmp) / "plain", []),
                "refined": mine_and_score(world, Path(tmp) / "refined",
                                          [f"captions.refine.model={args.model}", "execution.refine.num_gpus=0"])}
    gain = runs["refined"]["right_per_image"] / runs["own captions"]["right_per_image"] \
        if runs["own captions"]["right_per_image"] else None
    if args.json:
        print(json.dumps({"seed": args.seed, "model": args.model, "runs": runs, "right_per_image_gain": gain},
                         indent=1))
        return 0
    print(f"world seed {args.seed}, {args.shards} x {args.per_shard} images, demo config; captioner {args.model}")
    columns = ("minable", "pairs", "right_pairs", "right_per_image", "precision", "recall", "mining_seconds")
    print(f"  {'run':<14}" + "".join(f"{c:>16}" for c in columns))
    for name, f in runs.items():
        print(f"  {name:<14}" + "".join(f"{f[c] if f[c] is not None else '-':>16}" for c in columns))
    r = runs["refined"]
    share = r["refined_right"] / r["refined_pairs"] if r["refined_pairs"] else 0.0
    print(f"  pairs from refined captions: {r['refined_pairs']}, right {r['refined_right']} ({share:.1%});"
          f" right pairs per image x{gain:.2f}" if gain else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
