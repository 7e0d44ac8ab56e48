"""`ovmine config`: the shipped configs, and a config as a run would see it after defaults and `--set`."""
from __future__ import annotations

import argparse
import json

import yaml

from mining.cli.common import add_command, add_config_args, add_json
from mining.config import config_path, load_config, shipped_configs


def _resolved(kind: str, path: str | None, overrides: list[str]) -> dict:
    if kind == "train-clip":
        from mining.train.config import load_train_config

        return load_train_config(path, overrides).model_dump(mode="json")
    return load_config(path, overrides).resolved()


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "list":
        found = {name: str(path) for name, path in shipped_configs().items()}
        if args.json:
            print(json.dumps(found))
        else:
            print("\n".join(f"{name:<22}{path}" for name, path in found.items()))
        return 0
    resolved = _resolved(args.kind, args.config, args.overrides)
    if args.json:
        print(json.dumps(resolved))
    else:
        source = str(config_path(args.config)) if args.config else "the defaults"
        print(f"# {args.kind} config resolved from {source}" + (" with " + " ".join(
            f"--set {o}" for o in args.overrides) if args.overrides else ""))
        print(yaml.safe_dump(resolved, sort_keys=False), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "config", "list the shipped configs, or show a config resolved as a run would see it",
                    "ovmine config list", "ovmine config show --config tiny --set match.min_margin=0.1",
                    "ovmine config show --kind train-clip --config train_clip_toyworld --json")
    p.add_argument("action", choices=["show", "list"], help="show: print the resolved config; list: shipped configs")
    add_config_args(p)
    p.add_argument("--kind", choices=["mine", "train-clip"], default="mine", help="which kind of config FILE is")
    add_json(p, "the resolved config (or the list)")
    p.set_defaults(func=cmd_config)
