"""`ovmine config`: the shipped configs, a config as a run would see it after defaults and `--set`, and a copy
of a shipped config to start from."""
from __future__ import annotations

import argparse
import json

import yaml

from mining.cli.common import add_command, add_config_args, add_json, report
from mining.config import ConfigError, RunConfig, config_path, load_config, read_config_file, shipped_configs

KINDS = ("mine", "train-clip", "train-segmenter")
CONFIG_FILE = "config file"


def _training_fields(kind: str) -> set[str]:
    if kind == "train-clip":
        from mining.train.config import TrainConfig as model
    else:
        from mining.train.segmenter_config import SegmenterConfig as model
    return set(model.model_fields)


def config_kind(path: str | None) -> str:
    """Which command a config file is for, from the sections it names: mining's own sections make it a mining
    config; otherwise the trainer whose fields it names and the other's lack (a shipped training config is
    named after its trainer too)."""
    if path is None:
        return "mine"
    keys = set(read_config_file(path))
    clip, segmenter = _training_fields("train-clip"), _training_fields("train-segmenter")
    if keys & (set(RunConfig.model_fields) - clip - segmenter):
        return "mine"
    if keys & (segmenter - clip):
        return "train-segmenter"
    if keys & (clip - segmenter):
        return "train-clip"
    name = config_path(path).stem
    return next((k for k in KINDS[1:] if name.startswith(k.replace("-", "_"))), "mine")


def _resolved(kind: str, path: str | None, overrides: list[str]) -> dict:
    if kind == "train-clip":
        from mining.train.config import load_train_config

        return load_train_config(path, overrides).model_dump(mode="json")
    if kind == "train-segmenter":
        from mining.train.segmenter_config import load_segmenter_config

        return load_segmenter_config(path, overrides).model_dump(mode="json")
    return load_config(path, overrides).resolved()


def cmd_list(args: argparse.Namespace) -> int:
    found = {name: str(path) for name, path in shipped_configs().items()}
    if args.json:
        print(json.dumps(found))
    else:
        print("\n".join(f"{name:<30}{config_kind(path):<17}{path}" for name, path in found.items()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    kind = args.kind or config_kind(args.config)
    resolved = _resolved(kind, args.config, args.overrides)
    if args.json:
        print(json.dumps(resolved))
    else:
        source = str(config_path(args.config)) if args.config else "the defaults"
        print(f"# {kind} config resolved from {source}" + (" with " + " ".join(
            f"--set {o}" for o in args.overrides) if args.overrides else ""))
        print(yaml.safe_dump(resolved, sort_keys=False), end="")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """The shipped file as it is: its comments, and its weights named by placeholder (`${TOYWORLD_WEIGHTS}`),
    never by this machine's paths, so the copy works wherever ovmine is installed. Written through the write
    guard: never over the shipped file or into an output's own files, and over another file only with
    --overwrite."""
    from mining.sinks.guard import check_file_output
    from mining.storage import Location

    shipped = shipped_configs()
    if args.name not in shipped:
        raise ConfigError(f"config init: no shipped config {args.name!r} (shipped: {', '.join(shipped)})")
    out = Location.of(args.file)
    check_file_output(out, CONFIG_FILE, [str(shipped[args.name])], args.overwrite, flag="config init FILE")
    out.write_atomic(shipped[args.name].read_bytes())
    report(args, {"name": args.name, "file": str(out)},
           f"wrote {out} (a copy of the shipped {args.name}); use it with --config {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "config", "list the shipped configs, show a config resolved as a run would see it, or "
                                   "copy a shipped one to start from",
                    "ovmine config list", "ovmine config show --config tiny --set match.min_margin=0.1",
                    "ovmine config init coco my-run.yaml")
    actions = p.add_subparsers(dest="action", required=True, metavar="{list,show,init}")
    listed = add_command(actions, "list", "the shipped configs: name, kind (the command they are for) and file",
                         "ovmine config list", "ovmine config list --json")
    add_json(listed, "the shipped configs (name: file)")
    listed.set_defaults(func=cmd_list)

    show = add_command(actions, "show", "a config resolved as the command it is for would see it: defaults, the "
                                        "file, then --set",
                       "ovmine config show --config tiny --set match.min_margin=0.1",
                       "ovmine config show --config train_clip_toyworld --set steps=300 --json",
                       "ovmine config show --config my-train.yaml --kind train-segmenter")
    add_config_args(show)
    show.add_argument("--kind", choices=KINDS,
                      help="which command FILE is for (default: told from the sections it names)")
    add_json(show, "the resolved config")
    show.set_defaults(func=cmd_show)

    init = add_command(actions, "init", "copy a shipped config, comments included, to a file of your own",
                       "ovmine config init coco my-run.yaml", "ovmine config init train_clip_toyworld train.yaml")
    init.add_argument("name", metavar="NAME", help="a shipped config (`ovmine config list`)")
    init.add_argument("file", metavar="FILE", help="the new file")
    init.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    add_json(init, "the name and the file written")
    init.set_defaults(func=cmd_init)
