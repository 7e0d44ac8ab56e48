"""`ovmine mine`: the mining run, its progress and its summary."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mining.cli.common import add_command, add_config_args, add_json, positive_int
from mining.config import load_config


def _summary(manifest: dict[str, Any], output: str) -> str:
    t = manifest["totals"]
    lines = [
        f"mined {output}",
        f"  images in          {t['images_in']}",
        f"  images with pairs  {t['images_with_pairs']}",
        f"  pairs              {t['pairs']}",
        f"  unique nouns       {t['unique_nouns']}",
        f"  wall time          {manifest['wall_seconds']:.1f} s",
        f"  images/s           {manifest['images_per_second']:.2f}",
    ]
    drops = t["drops"]
    lines.append(f"  dropped            {sum(drops.values())}" + ("" if drops else " (none)"))
    lines += [f"    {reason:<22}{n}" for reason, n in sorted(drops.items(), key=lambda kv: -kv[1])]
    errors = [e for s in manifest["shards"] for e in s["errors"]]
    if errors:
        lines.append(f"  shard errors       {len(errors)} (first: {errors[0]})")
    if manifest["timings"]:
        lines.append("  stage time (s)     " + ", ".join(f"{k} {v:.2f}" for k, v in manifest["timings"].items()))
    return "\n".join(lines)


def cmd_mine(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mining.pipeline import run_mining

    overrides = list(args.overrides)
    if args.executor:
        overrides.append(f"execution.executor={args.executor}")
    cfg = load_config(args.config, overrides)
    show = not args.json and sys.stderr.isatty()
    bar = tqdm(desc="shards", unit="shard", disable=not show)

    def on_shard(marker: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix(images=marker["images_in"], pairs=marker["pairs"])

    manifest = run_mining(cfg, args.input, args.output, limit=args.limit, on_shard=on_shard, progress=show,
                          overwrite=args.overwrite)
    bar.close()
    failed = manifest.get("failed_shards", [])
    if args.json:
        print(json.dumps({k: manifest[k] for k in ("totals", "timings", "wall_seconds", "images_per_second",
                                                    "config_hash")} | {"output": args.output, "failed_shards": failed}))
    else:
        print(_summary(manifest, args.output))
    if failed:
        print(f"ovmine: {len(failed)} shard(s) could not be read and were not committed: "
              + ", ".join(f"{f['input']} ({f['error']})" for f in failed[:5])
              + ("" if len(failed) <= 5 else f" and {len(failed) - 5} more")
              + "; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "mine", "mine mask–noun pairs from image–caption shards",
                    "ovmine mine --config configs/tiny.yaml --input data/ --output mined/",
                    "ovmine mine --config configs/coco.yaml --input 's3://bucket/cc3m/{00000..00331}.tar' "
                    "--output s3://bucket/mined/cc3m")
    add_config_args(p, required=True)
    p.add_argument("--input", nargs="+", required=True,
                   help="shards: paths, directories, brace patterns (data/{00000..00009}.tar), s3:// URIs")
    p.add_argument("--output", required=True, help="output directory or s3:// prefix")
    p.add_argument("--limit", type=positive_int, help="mine only the first N images (in input order)")
    p.add_argument("--executor", choices=["ray", "local"], help="shortcut for --set execution.executor=...")
    p.add_argument("--overwrite", action="store_true",
                   help="mine every shard again, even those already committed in OUTPUT")
    add_json(p)
    p.set_defaults(func=cmd_mine)
