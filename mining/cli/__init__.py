"""The `ovmine` command: human summaries on the terminal, `--json` for machines. The library only logs.

Each module here registers one group of subcommands; `main` turns the errors a user can cause into one line.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading

from mining import __version__
from mining.cli import cluster, configs, mine, outputs, segment, stats, train, world
from mining.cli.common import Parser, UsageError, add_verbosity, resolve_outputs
from mining.config import ConfigError
from mining.sinks.lease import OutputBusy
from mining.storage import explain_s3_error

COMMAND_GROUPS = (mine, world, outputs, stats, train, segment, cluster, configs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ovmine", description=__doc__.splitlines()[0],
                    epilog="`ovmine COMMAND --help` shows a command's options, defaults and examples")
    parser.add_argument("--version", action="version", version=f"ovmine {__version__}")
    add_verbosity(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def _quiet_broken_pipe() -> int:
    """Python's docs (signal, "Note on SIGPIPE"): point stdout at devnull so the exit flush is silent."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141   # 128 + SIGPIPE, what a shell reports for `yes | head`


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler, `kill`) unwinds every command like Ctrl-C: leases released, uncommitted parts
    removed, exit 130 with the resume hint. (Mining on Ray installs the same while it runs.)"""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    Parser.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(Parser.argv)
        resolve_outputs(parser, args)
    except BrokenPipeError:   # `ovmine --help | head -1`
        return _quiet_broken_pipe()
    level = logging.ERROR if args.quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # Ray Data narrates every operator at INFO; the summary says what matters
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
        # transformers' "Loading weights" bars, one per model per worker (read at its import: set before it)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        code = args.func(args)
        sys.stdout.flush()   # a reader that went away shows here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:   # `ovmine ... | head`: not an error
        return _quiet_broken_pipe()
    except ConfigError as err:
        print(f"ovmine: {err}", file=sys.stderr)
        return 2
    except UsageError as err:
        print(f"ovmine {args.command}: error: {err} (see ovmine {args.command} --help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovmine: interrupted; committed shards are kept, rerun the same command to finish", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError, OutputBusy) as err:
        print(f"ovmine: error: {explain_s3_error(err) or err}", file=sys.stderr)
        return 1
    except Exception as err:   # botocore's errors are no OSError: the S3 setup ones are the user's to fix
        explained = explain_s3_error(err)
        if explained is None:
            raise
        print(f"ovmine: error: {explained}", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
