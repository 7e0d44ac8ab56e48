"""Commands over a mining output: `eval`, `validate`, `curate`, `export`."""
from __future__ import annotations

import argparse
import json
import sys

from mining.cli.common import (UsageError, add_command, add_json, add_output, add_s3_endpoint, location,
                               positive_int, report)


def cmd_eval(args: argparse.Namespace) -> int:
    from mining.evaluation.run import evaluate, format_eval

    scores = evaluate(location(args, args.output), location(args, args.gt), synonyms=location(args, args.synonyms),
                      iou=args.iou, unknown_nouns=args.unknown_nouns,
                      region_top1=args.region_top1, region_overrides=args.overrides,
                      progress=not args.json and not args.quiet and sys.stderr.isatty(),
                      allow_partial=args.allow_partial)
    print(json.dumps(scores) if args.json else format_eval(scores))   # the answer: printed even with -q
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from mining.postrun.validate import check_output

    figures = check_output(location(args, args.output))
    report(args, figures,
           f"{args.output}: valid ({figures['shards']} shards, {figures['records']} records, {figures['pairs']} pairs; "
           f"{figures['images_in']} images in = {figures['images_with_pairs']} with pairs + "
           f"{sum(figures['drops'].values())} dropped)")
    return 0


def _read(flag: str, reader, path: str):
    """A file a flag names, read by `reader`; a file that cannot be read is one line naming the flag."""
    try:
        return reader(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        why = {FileNotFoundError: "no such file", IsADirectoryError: "a folder, not a file",
               PermissionError: "not readable"}.get(type(err), "not UTF-8 text")
        raise ValueError(f"{flag} {path}: {why}") from None


def _audit_deny(args: argparse.Namespace) -> tuple[list[str], dict | None]:
    """The nouns --audit's marks estimate below --min-precision, and the estimates (None without --audit)."""
    if (args.audit is None) != (args.min_precision is None):
        raise UsageError("--audit and --min-precision go together: the audit's marks estimate each noun's precision, "
                         "--min-precision says how much a noun needs to stay")
    if args.audit is None:
        return [], None
    if not 0 <= args.min_precision <= 1:
        raise UsageError(f"--min-precision must be in [0, 1], got {args.min_precision:g}")
    from mining.postrun.audit import check_output, deny_list, estimate, read_audit
    from mining.sinks.commits import committed_markers
    from mining.sinks.reader import read_manifest

    source = location(args, args.input)
    audit = read_audit(location(args, args.audit))
    check_output(audit, read_manifest(source), args.input, args.audit)
    nouns: dict[str, int] = {}
    for marker in committed_markers(source).values():
        for noun, n in marker.get("nouns", {}).items():
            nouns[noun] = nouns.get(noun, 0) + n
    estimates = estimate(audit, nouns)
    return deny_list(estimates, args.min_precision), estimates


def cmd_curate(args: argparse.Namespace) -> int:
    from mining.postrun.curate import CurationFilters, curate, read_noun_list, read_synonyms

    audit_deny, estimates = _audit_deny(args)
    filters = CurationFilters(
        min_similarity=args.min_similarity, min_margin=args.min_margin, min_noun_count=args.min_noun_count,
        max_per_noun=args.max_per_noun,
        nouns_allow=_read("--nouns-allow", read_noun_list, args.nouns_allow) if args.nouns_allow else None,
        nouns_deny=_read("--nouns-deny", read_noun_list, args.nouns_deny) if args.nouns_deny else [],
        synonyms=_read("--merge-synonyms", read_synonyms, args.merge_synonyms) if args.merge_synonyms else {},
        drop_refined=args.drop_refined, audit_deny=audit_deny)
    manifest = curate(location(args, args.input), location(args, args.output), filters, overwrite=args.overwrite)
    t, before = manifest["totals"], manifest["lineage"]["input_totals"]
    denied = [r for r in estimates["nouns"] if r["noun"] in audit_deny] if estimates else []
    text = (f"curated {args.input} -> {args.output}\n"
            f"  images  {before['images_with_pairs']} -> {t['images_with_pairs']}\n"
            f"  pairs   {before['pairs']} -> {t['pairs']}\n"
            f"  nouns   {before['unique_nouns']} -> {t['unique_nouns']}")
    if estimates:
        text += (f"\n  audit   {len(denied)} of {len(estimates['nouns'])} audited nouns below precision "
                 f"{args.min_precision:g}"
                 + "".join(f"\n    {r['noun']}: {r['right']}/{r['marked']} marked right ({100 * r['precision']:.0f}%, "
                           f"95% interval {100 * r['interval'][0]:.0f}-{100 * r['interval'][1]:.0f}%)" for r in denied))
    report(args, {"output": args.output, "totals": t, "input_totals": before, "config_hash": manifest["config_hash"]}
           | ({"audit_deny": denied} if estimates else {}), text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mining.postrun.export_coco import export_coco

    counts = export_coco(location(args, args.output), location(args, args.dest), location(args, args.images_dir),
                         overwrite=args.overwrite)
    report(args, counts,
           f"wrote {args.dest}: {counts['images']} images, {counts['annotations']} annotations, "
           f"{counts['categories']} categories"
           + (f"; {counts['images_written']} images in {args.images_dir}" if args.images_dir else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "eval", "score a mining output against COCO-format ground truth",
                    "ovmine eval mined/ --gt world/ground_truth.json --region-top1")
    p.add_argument("output", metavar="RUN", help="a mining (or curated) output, local or s3://")
    p.add_argument("--gt", required=True, help="COCO instances JSON (e.g. a toy world's ground_truth.json)")
    p.add_argument("--iou", type=float, default=0.5, help="mask IoU for a pair to be correct")
    p.add_argument("--synonyms", metavar="FILE", help="YAML 'category: [synonym, ...]' on top of the ground truth's")
    p.add_argument("--unknown-nouns", choices=["wrong", "skip"],
                   help="pairs whose noun names no category: wrong, or left unjudged (default: wrong only when "
                        "the ground truth says it is exhaustive, as the toy world's does)")
    p.add_argument("--region-top1", action="store_true",
                   help="also classify the ground-truth masks with the run's region encoder (top-1 accuracy)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's config for --region-top1, e.g. regions.pretrained=other.safetensors")
    p.add_argument("--allow-partial", action="store_true",
                   help="score even when the ground truth has fewer than half of the run's images")
    add_json(p)
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_eval)

    p = add_command(sub, "validate", "check a mining output against schemas/ and its own counts",
                    "ovmine validate mined/")
    p.add_argument("output", metavar="RUN", help="a mining (or curated) output, local or s3://")
    add_json(p)
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_validate)

    p = add_command(sub, "curate", "write a filtered copy of a mining output, in the same schema",
                    "ovmine curate mined/ --output curated/ --min-similarity 0.25 --nouns-deny junk.txt",
                    "ovmine curate mined/ --output curated/ --audit mined-audit.json --min-precision 0.8")
    p.add_argument("input", metavar="RUN", help="the mining (or curated) output to filter, local or s3://")
    add_output(p, "output", "NEW_RUN", "where the filtered copy goes (a new folder or s3:// prefix)")
    p.add_argument("--min-similarity", type=float, help="keep pairs whose mask-noun cosine is at least this, in "
                                                         "[-1, 1] (default: no threshold)")
    p.add_argument("--min-margin", type=float, help="keep pairs whose margin over the next noun is at least this, "
                                                     "in [0, 2]; a pair with no rival passes (default: none)")
    p.add_argument("--min-noun-count", type=positive_int, metavar="N", help="drop nouns with fewer surviving pairs")
    p.add_argument("--max-per-noun", type=positive_int, metavar="K", help="keep each noun's K most similar pairs")
    p.add_argument("--nouns-allow", metavar="FILE", help="only these nouns (one per line)")
    p.add_argument("--nouns-deny", metavar="FILE", help="never these nouns (one per line)")
    p.add_argument("--merge-synonyms", metavar="FILE", help="YAML 'canonical: [synonym, ...]'; applied first")
    p.add_argument("--audit", metavar="FILE", help="an audit file saved from RUN's report: with --min-precision, deny "
                                                   "the nouns whose marked pairs are right less often than that")
    p.add_argument("--min-precision", type=float, metavar="P",
                   help="with --audit: the estimated precision, in [0, 1], an audited noun needs to stay")
    p.add_argument("--drop-refined", action="store_true",
                   help="drop the pairs whose noun only captions.refine's caption named (the image's own captions' "
                        "pairs stay; default: keep them)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace another curation in NEW_RUN, or write into a non-empty folder that is no ovmine "
                        "output (never over another kind of output)")
    add_json(p)
    add_s3_endpoint(p)
    p.set_defaults(func=cmd_curate)

    p = add_command(sub, "export", "export a mining output to another format",
                    "ovmine export coco mined/ --output coco.json --images-dir images/")
    fmt = p.add_subparsers(dest="format", required=True)
    c = add_command(fmt, "coco", "COCO instances JSON (RLE masks, one category per noun)",
                    "ovmine export coco mined/ --output coco.json --images-dir images/")
    c.add_argument("output", metavar="RUN", help="a mining (or curated) output, local or s3://")
    add_output(c, "dest", "COCO_JSON", "coco.json path or s3:// URI")
    c.add_argument("--images-dir", help="also write the images, in the masks' frame, named like file_name")
    c.add_argument("--overwrite", action="store_true",
                   help="replace a COCO_JSON that is not an earlier export, or write into a non-empty --images-dir "
                        "that is no earlier export's (never over inputs or another kind of output)")
    add_json(c)
    add_s3_endpoint(c)
    c.set_defaults(func=cmd_export)
