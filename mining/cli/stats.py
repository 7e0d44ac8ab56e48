"""`ovmine stats`: statistics of a mining output, and its HTML report."""
from __future__ import annotations

import argparse
import json

from mining.cli.common import add_command, add_json, add_s3_endpoint, s3_options


def cmd_stats(args: argparse.Namespace) -> int:
    from mining.postrun.stats import compute_stats, format_stats

    stats = compute_stats(args.output, s3_options(args), top_k=args.top)
    if args.html:
        from mining.postrun.report import render_report
        from mining.storage import write_bytes_atomic

        page = render_report(args.output, stats, s3_options(args), gallery=args.gallery, seed=args.seed)
        write_bytes_atomic(args.html, page.encode(), s3_options(args))
    print(json.dumps(stats) if args.json else format_stats(stats) + (f"\nreport: {args.html}" if args.html else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "stats", "statistics of a mining output; --html writes a report with a gallery",
                    "ovmine stats mined/", "ovmine stats mined/ --html report.html")
    p.add_argument("output", help="a mining (or curated) output, local or s3://")
    add_json(p, "the statistics")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (local or s3://)")
    p.add_argument("--top", type=int, default=20, metavar="K", help="how many of the most frequent nouns")
    p.add_argument("--gallery", type=int, default=24, metavar="N",
                   help="pairs in each gallery (random sample, lowest similarity)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random gallery sample")
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_stats)
