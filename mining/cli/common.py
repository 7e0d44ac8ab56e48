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
