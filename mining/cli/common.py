"""Argument helpers shared by the `ovmine` subcommands."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: a count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")


def s3_options(args: argparse.Namespace):
    from mining.storage import S3Options

    return S3Options(endpoint_url=getattr(args, "s3_endpoint", None))


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


def add_command(sub: argparse._SubParsersAction, name: str, summary: str, *examples: str,
                details: str = "") -> argparse.ArgumentParser:
    """A subcommand with a one-line description, its defaults in --help, and runnable examples."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    return sub.add_parser(name, help=summary, description=summary + (f"\n\n{details}" if details else ""),
                          epilog=epilog, formatter_class=HelpFormatter)


def add_json(p: argparse.ArgumentParser, what: str = "the summary") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object on stdout")
