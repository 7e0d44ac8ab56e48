"""`ovmine stats`: statistics of a mining output (finished, curated, or a run in progress), its HTML report,
and the comparison of two outputs."""
from __future__ import annotations

import argparse
import json

from mining.cli.common import UsageError, add_command, add_json, add_s3_endpoint, location, positive_int


def cmd_stats(args: argparse.Namespace) -> int:
    from mining.postrun.compare import compare_stats, format_compare
    from mining.postrun.stats import compute_stats, format_stats

    output = location(args, args.output)
    if args.html:   # refused before any work: never over the runs, their inputs or another output's files
        from mining.sinks.guard import REPORT, check_file_output, run_inputs

        inputs = run_inputs(output) + (run_inputs(location(args, args.compare)) if args.compare else [])
        check_file_output(location(args, args.html), REPORT, inputs, args.overwrite, flag="--html")
    if (args.gt or args.synonyms) and not args.html:
        raise UsageError("--gt and --synonyms judge the report's pairs: give --html FILE too")
    if args.synonyms and not args.gt:
        raise UsageError("--synonyms names the ground truth's categories: give --gt too")
    audit = None
    if args.audit:
        from mining.postrun.audit import check_output, read_audit
        from mining.sinks.reader import read_manifest

        audit = read_audit(location(args, args.audit))
        check_output(audit, read_manifest(output), args.output, args.audit)
    stats = compute_stats(output, top_k=args.top, keep_pair_stats=bool(args.compare or args.html or audit))
    comparison = other = None
    if args.compare:
        other = compute_stats(location(args, args.compare), top_k=args.top, keep_pair_stats=True)
        comparison = compare_stats(stats, other, top_k=args.top)
    if audit is not None:
        from mining.postrun.audit import estimate

        stats["audit"] = estimate(audit, dict(stats["_pair_stats"].nouns))
    if args.html:
        from mining.postrun.report import render_report

        page = render_report(output, stats, gallery=args.gallery, seed=args.seed, comparison=comparison,
                             other=location(args, args.compare), other_stats=other, explore=args.explore,
                             explore_shards=args.explore_shards,
                             gt=location(args, args.gt), synonyms=location(args, args.synonyms))
        location(args, args.html).write_atomic(page.encode())
    for s in (stats, other):
        if s is not None:
            s.pop("_pair_stats", None)
    if args.json:
        print(json.dumps(stats if comparison is None else {"compare": comparison, "a": stats, "b": other}))
    elif args.html and args.quiet:   # the report was the point; -q writes it without a word
        pass
    else:
        text = format_stats(stats) if comparison is None else format_compare(comparison)
        if audit is not None:
            from mining.postrun.audit import format_audit

            text += "\n" + format_audit(stats["audit"])
        print(text + (f"\nreport: {args.html}" if args.html else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "stats", "statistics of a mining output; --html writes a report a curator can read",
                    "ovmine stats mined/", "ovmine stats mined/ --html report.html",
                    "ovmine stats mined/ --compare curated/ --html compare.html",
                    "ovmine stats mined/ --html report.html --gt world/ground_truth.json",
                    "ovmine stats mined/ --audit mined-audit.json",
                    details="A curated output is reported against the images its mining run read; a run in "
                            "progress (or interrupted) reports the shards committed so far.")
    p.add_argument("output", metavar="RUN", help="a mining (or curated) output, local or s3://")
    p.add_argument("--compare", metavar="OTHER",
                   help="another output to set beside RUN (before/after curate, two configs): totals, drops, "
                        "pairs per noun, and in the report both runs' plots and the pairs only one has; RUN is A "
                        "(before), OTHER is B (after), and B - A the change")
    add_json(p, "the statistics (with --compare: {compare, a, b})")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (local or s3://)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --html: replace a FILE that is not an earlier report (never an input or an output's "
                        "own file)")
    p.add_argument("--top", type=positive_int, default=20, metavar="K",
                   help="how many of the most frequent nouns (listed, and in the report's noun section)")
    p.add_argument("--gallery", type=positive_int, default=24, metavar="N",
                   help="pairs in each gallery (random sample, lowest similarity)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random gallery samples")
    p.add_argument("--explore", type=positive_int, default=1000, metavar="N",
                   help="pairs the report's explorer holds: every pair of the rarer nouns, a uniform sample of "
                        "each frequent one")
    p.add_argument("--explore-shards", type=positive_int, default=16, metavar="K",
                   help="the explorer draws its pairs from at most K shards, chosen at random: each picture is read "
                        "back from its input shard, so a large output's report reads K input shards, not all")
    p.add_argument("--gt", metavar="FILE", help="with --html: COCO instances JSON; the report marks each pair right "
                                                "or wrong and gives precision per noun (as ovmine eval scores)")
    p.add_argument("--synonyms", metavar="FILE", help="with --gt: YAML 'category: [synonym, ...]', as ovmine eval")
    p.add_argument("--audit", metavar="FILE", help="an audit file saved from the report's explorer: estimated "
                                                   "precision per noun, with 95%% intervals")
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_stats)
