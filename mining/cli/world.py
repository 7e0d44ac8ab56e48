"""Commands around data that is not yet mined: `parse`, `sample-data`, `toyworld`, `demo`."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mining.cli.common import add_command, add_config_args, add_json, add_s3_endpoint, s3_options
from mining.config import load_config


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
    if args.labelled:
        score = score_nouns(predicted, expected)
        print(f"{score.captions} captions: noun precision {score.precision:.3f}, recall {score.recall:.3f} "
              f"({score.true_positives} right, {score.false_positives} extra, {score.false_negatives} missed)",
              file=sys.stderr)
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from mining.synthetic import make_shards

    paths = make_shards(args.out, shards=args.shards, per_shard=args.per_shard, seed=args.seed, size=args.size)
    print(f"wrote {len(paths)} shard(s) of {args.per_shard} images to {args.out}")
    return 0


def cmd_toyworld(args: argparse.Namespace) -> int:
    from mining.toyworld.make import make_world

    summary = make_world(args.out, args.shards, args.per_shard, args.seed, args.size, s3_options(args),
                         progress=not args.json and sys.stderr.isatty())
    print(json.dumps(summary) if args.json else
          f"wrote a toy world of {summary['images']} images ({summary['instances']} ground-truth instances)\n"
          f"  shards        {summary['shards_uri']}/  ({summary['shards']} tars)\n"
          f"  ground truth  {summary['ground_truth']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mining.toyworld.demo import format_demo, run_demo

    result = run_demo(args.out, shards=args.shards, per_shard=args.per_shard, seed=args.seed, teacher=args.teacher,
                      executor=args.executor, overrides=args.overrides, progress=not args.json and sys.stderr.isatty())
    print(json.dumps(result) if args.json else format_demo(result))
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

    p = add_command(sub, "sample-data", "write a small generated image–caption dataset (webdataset shards)",
                    "ovmine sample-data data/ --shards 2 --per-shard 16")
    p.add_argument("out")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--per-shard", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.set_defaults(func=cmd_sample_data)

    p = add_command(sub, "toyworld", "the synthetic scene world with ground truth",
                    "ovmine toyworld make world/ --shards 2 --per-shard 32 --seed 0")
    what = p.add_subparsers(dest="action", required=True)
    t = add_command(what, "make", "write world shards (webdataset) and COCO ground truth",
                    "ovmine toyworld make world/ --shards 2 --per-shard 32 --seed 0")
    t.add_argument("out", help="directory or s3:// prefix: OUT/shards/*.tar and OUT/ground_truth.json")
    t.add_argument("--shards", type=int, default=2)
    t.add_argument("--per-shard", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--size", type=int, default=128, help="image side in pixels")
    add_json(t)
    add_s3_endpoint(t)
    t.set_defaults(func=cmd_toyworld)

    p = add_command(sub, "demo", "make a toy world, mine it on local Ray with the shipped models, and score it",
                    "ovmine demo", "ovmine demo --out demo/ --shards 2 --executor local")
    p.add_argument("--out", default="toyworld-demo", help="working directory (world, mined output, config)")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--per-shard", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", choices=["mask2former", "felzenszwalb"], default="mask2former",
                   help="the shipped tiny Mask2Former, or the weights-free baseline")
    p.add_argument("--executor", choices=["ray", "local"], default="ray")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the demo config")
    add_json(p)
    p.set_defaults(func=cmd_demo)
