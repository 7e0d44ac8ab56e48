"""Commands around data that is not yet mined: `parse`, `sample-data`, `toyworld`, `demo`."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mining.cli.common import (add_command, add_config_args, add_json, add_output, add_s3_endpoint, positive_int,
                               report, s3_options, seed_number)
from mining.config import load_config

MIN_SIDE = 16   # pixels: the generators draw shapes of a sixth of the side, and a mask needs a few pixels


def image_side(text: str) -> int:
    """argparse type: an image side in pixels, at least MIN_SIDE."""
    value = positive_int(text)
    if value < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_SIDE} pixels, got {value}")
    return value


def add_generator_args(p: argparse.ArgumentParser, shards: int, per_shard: int) -> None:
    """The sizes and seed of a generated dataset: counts are refused below 1 before anything is written."""
    p.add_argument("--shards", type=positive_int, default=shards, help="how many .tar shards")
    p.add_argument("--per-shard", type=positive_int, default=per_shard, help="images per shard")
    p.add_argument("--seed", type=seed_number, default=0,
                   help="the world's seed: the same seed makes the same images, captions and ground truth")


def _labelled(line: str, number: int) -> tuple[str, list[str]]:
    try:
        doc = json.loads(line)
        return doc["caption"], list(doc["nouns"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"--labelled line {number}: expected {{\"caption\": ..., \"nouns\": [...]}}") from None


def cmd_parse(args: argparse.Namespace) -> int:
    from mining.entities import SpacyEntityParser
    from mining.entities.evaluate import score_nouns

    cfg = load_config(args.config, args.overrides)
    parser = SpacyEntityParser(cfg.entities)
    stream = open(args.file, encoding="utf-8") if args.file and args.file != "-" else sys.stdin
    predicted, expected = [], []
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            caption, nouns = _labelled(line, number) if args.labelled else (line.rstrip("\n"), None)
            entities = parser.parse([caption])
            doc: dict[str, Any] = {"caption": caption, "entities": [e.to_json() for e in entities]}
            if nouns is not None:
                got = [e.noun for e in entities]
                doc |= {"missed": sorted(set(nouns) - set(got)), "extra": sorted(set(got) - set(nouns))}
                predicted.append(got)
                expected.append(nouns)
            print(json.dumps(doc), flush=True)
    if args.labelled and not args.quiet:   # the lines are the answer; the score on stderr is a summary
        score = score_nouns(predicted, expected)
        print(f"{score.captions} captions: noun precision {score.precision:.3f}, recall {score.recall:.3f} "
              f"({score.true_positives} right, {score.false_positives} extra, {score.false_negatives} missed)",
              file=sys.stderr)
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from mining.toyworld.make import make_shards

    paths = make_shards(args.out, shards=args.shards, per_shard=args.per_shard, seed=args.seed, size=args.size,
                        overwrite=args.overwrite)
    report(args, {"out": args.out, "shards": [str(p) for p in paths], "images": len(paths) * args.per_shard},
           f"wrote {len(paths)} shard(s) of {args.per_shard} images to {args.out}")
    return 0


def cmd_toyworld(args: argparse.Namespace) -> int:
    from mining.toyworld.make import make_world

    summary = make_world(args.out, args.shards, args.per_shard, args.seed, args.size, s3_options(args),
                         progress=not args.json and not args.quiet and sys.stderr.isatty(), overwrite=args.overwrite)
    report(args, summary,
           f"wrote a toy world of {summary['images']} images ({summary['instances']} ground-truth instances)\n"
          f"  shards        {summary['shards_uri']}/  ({summary['shards']} tars)\n"
          f"  ground truth  {summary['ground_truth']}")
    return 0


def cmd_oracle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mining.toyworld.oracle import write_oracle

    manifest = write_oracle(Path(args.world), args.output, overwrite=args.overwrite)
    counts = manifest["totals"]
    report(args, {"output": args.output, "counts": counts},
           f"wrote the ground truth of {args.world} as {counts['pairs']} pairs of {counts['images_with_pairs']} images "
          f"to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mining.cli.mine import ConsoleProgress, progress_mode
    from mining.toyworld.demo import format_demo, run_demo

    mining = ConsoleProgress(f"{args.out}/mined", progress_mode(args))
    try:
        result = run_demo(args.out, shards=args.shards, per_shard=args.per_shard, seed=args.seed,
                          teacher=args.teacher, executor=args.executor, overrides=args.overrides,
                          progress=not args.json and not args.quiet and sys.stderr.isatty(), mining_progress=mining)
    finally:
        mining.close()
    report(args, result, format_demo(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "parse", "print the entities of captions, one JSON object per caption",
                    "echo 'two red stars on the grass' | ovmine parse",
                    "ovmine parse --labelled tests/data/captions_labelled.jsonl")
    add_config_args(p)
    p.add_argument("file", nargs="?", help="one caption per line; stdin when omitted or '-'")
    p.add_argument("--labelled", action="store_true",
                   help='lines are {"caption": ..., "nouns": [...]}: also print what was missed or extra, '
                        "and noun precision/recall on stderr")
    p.set_defaults(func=cmd_parse)

    p = add_command(sub, "sample-data",
                    "write a small toy-world image–caption dataset (webdataset shards, no ground truth)",
                    "ovmine sample-data data/ --shards 2 --per-shard 16")
    add_output(p, "out", "FOLDER", "a new or empty folder: FOLDER/00000.tar, ...")
    add_generator_args(p, shards=2, per_shard=16)
    p.add_argument("--size", type=image_side, default=128, help="image side in pixels")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT may hold files: its .tar shards are replaced, anything else is left alone")
    add_json(p, "the shards written")
    p.set_defaults(func=cmd_sample_data)

    p = add_command(sub, "toyworld", "the synthetic scene world with ground truth",
                    "ovmine toyworld make world/ --shards 2 --per-shard 32 --seed 0")
    what = p.add_subparsers(dest="action", required=True)
    t = add_command(what, "make", "write world shards (webdataset) and COCO ground truth",
                    "ovmine toyworld make world/ --shards 2 --per-shard 32 --seed 0")
    add_output(t, "out", "FOLDER",
               "a new or empty folder or s3:// prefix: FOLDER/shards/*.tar and FOLDER/ground_truth.json")
    add_generator_args(t, shards=2, per_shard=32)
    t.add_argument("--size", type=image_side, default=128, help="image side in pixels")
    t.add_argument("--overwrite", action="store_true",
                   help="OUT may hold files: its world (shards/*.tar, ground_truth.json) is replaced, anything "
                        "else is left alone")
    add_json(t)
    add_s3_endpoint(t)
    t.set_defaults(func=cmd_toyworld)
    t = add_command(what, "oracle", "write a world's ground truth as a mining output: every true mask paired "
                    "with its category's name (train on it for the upper bound)",
                    "ovmine toyworld oracle world/ world-oracle/")
    t.add_argument("world", metavar="WORLD", help="a folder `ovmine toyworld make` wrote")
    add_output(t, "output", "OUTPUT", "a new or empty folder, or an earlier oracle of WORLD")
    t.add_argument("--overwrite", action="store_true", help="write it again")
    add_json(t)
    t.set_defaults(func=cmd_oracle)

    p = add_command(sub, "demo", "make a toy world, mine it on local Ray with the shipped models, and score it",
                    "ovmine demo", "ovmine demo --out demo/ --shards 2 --executor local")
    p.add_argument("--output", dest="out", default="toyworld-demo", help="working folder (world, mined output, config)")
    add_generator_args(p, shards=4, per_shard=32)
    p.add_argument("--teacher", choices=["mask2former", "felzenszwalb"], default="mask2former",
                   help="the shipped tiny Mask2Former, or the weights-free baseline")
    p.add_argument("--executor", choices=["ray", "local"], default="ray",
                   help="ray: a local Ray of its own, as a cluster runs it; local: in this process")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the demo config")
    add_json(p)
    p.set_defaults(func=cmd_demo)
