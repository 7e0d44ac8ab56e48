"""The `ovmine` command: human summaries on the terminal, `--json` for machines. The library only logs.

Each module here registers one group of subcommands; `main` turns the errors a user can cause into one line.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from mining.cli import cluster, mine, outputs, stats, train, world
from mining.config import ConfigError
from mining.sinks.lease import OutputBusy

COMMAND_GROUPS = (mine, world, outputs, stats, train, cluster)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovmine", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # Ray Data narrates every operator at INFO; the summary says what matters
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"ovmine: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovmine: interrupted; committed shards are kept, rerun the same command to finish", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError, OutputBusy) as err:
        print(f"ovmine: error: {err}", file=sys.stderr)
        return 1
