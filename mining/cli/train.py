"""`ovmine train`: models trained from mined pairs."""
from __future__ import annotations

import argparse

from mining.cli.common import add_command, add_config_args, add_json, add_s3_endpoint, config_overrides, report


OVERWRITE_HELP = ("write into a non-empty folder that is no ovmine output (never over the data, the model trained "
                  "from, or another kind of output; a model folder of the same kind resumes)")


def cmd_train(args: argparse.Namespace) -> int:
    from mining.train.clip_trainer import train_clip
    from mining.train.config import load_train_config

    cfg = load_train_config(args.config, config_overrides(args))
    record = train_clip(cfg, args.data, args.output, executor=args.executor, overwrite=args.overwrite)
    scan = record["counts"]["scan"]
    report(args, {k: v for k, v in record.items() if k != "config"}, "\n".join([
        f"trained {args.output} (Model A, mask-adapted CLIP; {record['executor']} executor, "
        f"{record['workers']} worker(s))",
        f"  pairs              {scan['pairs'] - scan['filtered']} of {scan['pairs']} "
        f"({len(record['vocabulary'])} nouns)",
        f"  steps              {record['steps']} x {record['samples_per_step']} crops",
        f"  loss               {record['first_loss']} -> {record['final_loss']}",
        f"  samples/s          {record['samples_per_s']}",
        f"  wall time          {record['seconds']:.1f} s",
        f"  use it             --set regions.model={record['model']} --set regions.pretrained=null",
    ]))
    return 0


def cmd_train_segmenter(args: argparse.Namespace) -> int:
    from mining.train.segmenter_config import load_segmenter_config
    from mining.train.segmenter_trainer import train_segmenter

    cfg = load_segmenter_config(args.config, config_overrides(args))
    record = train_segmenter(cfg, args.data, args.output, executor=args.executor, overwrite=args.overwrite)
    scan = record["counts"]["scan"]
    report(args, {k: v for k, v in record.items() if k != "config"}, "\n".join([
        f"trained {args.output} (Model B, open-vocabulary segmenter; {record['executor']} executor, "
        f"{record['workers']} worker(s))",
        f"  started from       {record['started_from']['teacher']} (text: {record['started_from']['clip']})",
        f"  pairs              {scan['pairs'] - scan['filtered']} of {scan['pairs']} "
        f"({len(record['vocabulary'])} nouns)",
        f"  steps              {record['steps']} x {record['samples_per_step']} images",
        f"  loss               {record['first_loss']} -> {record['final_loss']}",
        f"  samples/s          {record['samples_per_s']}",
        f"  wall time          {record['seconds']:.1f} s",
        f"  use it             ovmine segment --model {args.output} --classes \"a,b,c\" IMAGES... --out DIR",
    ]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", "train a model from mined pairs",
                    "ovmine train clip --config configs/train_clip_toyworld.yaml --data mined/ --output clip-adapted/")
    what = p.add_subparsers(dest="model", required=True)
    tc = add_command(what, "clip", "Model A: fine-tune CLIP's image tower on masked crops (OVSeg)",
                     "ovmine train clip --config configs/train_clip_toyworld.yaml --data mined/ --output clip-adapted/")
    add_config_args(tc, required=True)
    tc.add_argument("--data", nargs="+", required=True, help="mining (or curated) outputs, local or s3://")
    tc.add_argument("--output", required=True, help="folder for the open_clip local-dir model and training.json")
    tc.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: in-process, one worker; ray: Ray Train (workers, checkpoints, resume)")
    tc.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_s3_endpoint(tc)
    add_json(tc, "the training record")
    tc.set_defaults(func=cmd_train)

    ts = add_command(what, "segmenter", "Model B: an open-vocabulary Mask2Former classifying in CLIP's text space",
                     "ovmine train segmenter --config configs/train_segmenter_toyworld.yaml --data mined/ "
                     "--output seg/")
    add_config_args(ts, required=True)
    ts.add_argument("--data", nargs="+", required=True, help="mining (or curated) outputs, local or s3://")
    ts.add_argument("--output", required=True, help="folder for the segmenter (what `ovmine segment` loads)")
    ts.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: in-process, one worker; ray: Ray Train (workers, checkpoints, resume)")
    ts.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_s3_endpoint(ts)
    add_json(ts, "the training record")
    ts.set_defaults(func=cmd_train_segmenter)
