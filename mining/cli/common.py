"""Argument helpers shared by the `ovmine` subcommands."""
from __future__ import annotations

import argparse
import difflib
import json
import re
from typing import Any


def positive_int(text: str) -> int:
    """argparse type: a count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed_number(text: str) -> int:
    """argparse type: a random seed, 0 or more (numpy's generators refuse negative seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    if required:   # the defaults name hub weights (ViT-B-16 'openai'): never fetch them without being asked
        p.add_argument("--config", required=True,
                       help="run config YAML, e.g. configs/tiny.yaml (offline) or configs/coco.yaml")
    else:
        p.add_argument("--config", help="run config YAML (see configs/); defaults apply when omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set match.min_similarity=0.25 (repeatable)")


def add_s3_endpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-endpoint", help="S3 endpoint URL; with a config, the same as --set storage.endpoint_url "
                                         "(default: AWS_ENDPOINT_URL)")


def s3_options(args: argparse.Namespace):
    """The S3 settings of a command that takes no config: the `storage` section's defaults and --s3-endpoint."""
    from mining.config import StorageConfig
    from mining.storage import S3Options

    return S3Options.from_config(StorageConfig(endpoint_url=getattr(args, "s3_endpoint", None)))


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The command's --set overrides, with --s3-endpoint as the storage.endpoint_url it stands for."""
    endpoint = getattr(args, "s3_endpoint", None)
    return [*args.overrides, *([f"storage.endpoint_url={endpoint}"] if endpoint else [])]


def location(args: argparse.Namespace, uri: str | None):
    """A path or s3:// URI the user gave, reached with the command's S3 settings (None stays None)."""
    from mining.storage import Location

    return None if uri is None else Location.of(uri, s3_options(args))


class UsageError(ValueError):
    """Flags that parse but do not go together: reported in one line with exit 2, like argparse's own errors."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example's line breaks and shows a flag's default when it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default   # identity, not equality: 0 is a default worth showing, False is not
        shown = action.option_strings and not (default is None or default is False or default == []
                                               or default is argparse.SUPPRESS)
        if shown and "%(default)" not in text and "default" not in text:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, and which names the flag a misspelt one probably meant."""

    argv: list[str] = []   # the command line being parsed, set by `mining.cli.main`

    def error(self, message: str) -> None:   # type: ignore[override]
        parser = _chosen_subcommand(self, self.argv)
        message = parser._unknown_flag() or _suggest_choice(message)
        self.exit(2, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")

    def _unknown_flag(self) -> str | None:
        known = [s for s in self._option_string_actions if s.startswith("--")]
        for token in self.argv:
            flag = token.split("=", 1)[0]
            if token == "--":
                break
            if not flag.startswith("--") or flag in known or sum(k.startswith(flag) for k in known) == 1:
                continue   # a value, a known flag, or an abbreviation argparse accepts
            close = difflib.get_close_matches(flag, known, n=1)
            return f"unknown option {flag}" + (f"; did you mean {close[0]}?" if close else "")
        return None


def _suggest_choice(message: str) -> str:
    """argparse's "invalid choice: 'minee' (choose from ...)" with the closest choice named first."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return message
    choices = re.findall(r"'([^']*)'", found.group(2)) or [c.strip() for c in found.group(2).split(",")]
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    return message + (f"; did you mean {close[0]}?" if close else "")


def _chosen_subcommand(parser: argparse.ArgumentParser, argv: list[str]) -> Parser:
    """The deepest subcommand parser the command line names: the one whose flags a stray flag is checked against."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for i, token in enumerate(argv):
                if token in action.choices:
                    return _chosen_subcommand(action.choices[token], argv[i + 1:])
    return parser  # type: ignore[return-value]


def add_verbosity(p: argparse.ArgumentParser, top_level: bool = False) -> None:
    """-v/-vv and -q, accepted before and after the subcommand (a subcommand's copy never resets the other's)."""
    p.add_argument("-v", "--verbose", action="count", default=0 if top_level else argparse.SUPPRESS,
                   help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", default=False if top_level else argparse.SUPPRESS,
                   help="print only errors (and --json when asked); a command that answers a question (config "
                        "show, jobs status, parse, ...) still prints the answer")


_COMMON = Parser(add_help=False)
add_verbosity(_COMMON)


def add_command(sub: argparse._SubParsersAction, name: str, summary: str, *examples: str,
                details: str = "") -> argparse.ArgumentParser:
    """A subcommand with a one-line description, its defaults in --help, and runnable examples."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    return sub.add_parser(name, help=summary, description=summary + (f"\n\n{details}" if details else ""),
                          epilog=epilog, formatter_class=HelpFormatter, parents=[_COMMON])


def add_output(p: argparse.ArgumentParser, dest: str, metavar: str, help: str) -> None:
    """Where the command writes, as `--output` like every other writing command, or (the older form) as a
    positional after its input; `resolve_outputs` takes whichever was given."""
    p.add_argument(dest, metavar=metavar, nargs="?", help=f"{help} (or --output {metavar})")
    p.add_argument("--output", dest=f"{dest}_flag", metavar=metavar, help=help)
    p.set_defaults(output_positional=dest)


def resolve_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`args.<dest>` from the positional or --output (see `add_output`); neither, or two different ones, is a
    usage error."""
    dest = getattr(args, "output_positional", None)
    if dest is None:
        return
    given, flag = getattr(args, dest), getattr(args, f"{dest}_flag")
    if given is None and flag is None:
        parser.error("the following arguments are required: --output")
    if given is not None and flag is not None and given != flag:
        parser.error(f"two outputs given ({given} and --output {flag}): give one")
    setattr(args, dest, given if given is not None else flag)


def report(args: argparse.Namespace, doc: Any, text: str) -> None:
    """What a command did, on stdout: `doc` as one JSON object with --json (a machine asked for it: printed even
    with -q), else the human `text`, unless -q (then a command prints only its errors, on stderr)."""
    if getattr(args, "json", False):
        print(json.dumps(doc))
    elif not getattr(args, "quiet", False):
        print(text)


def add_json(p: argparse.ArgumentParser, what: str = "the summary") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object on stdout")
