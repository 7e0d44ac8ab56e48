"""The `ovmine` command: human summaries on the terminal, `--json` for machines. The library only logs."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from mining.config import ConfigError, load_config
from mining.sinks.lease import OutputBusy


def positive_int(text: str) -> int:
    """argparse type: a count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    if required:   # the defaults name hub weights (ViT-B-16 'openai'): never fetch them without being asked
        p.add_argument("--config", required=True,
                       help="run config YAML, e.g. configs/tiny.yaml (offline) or configs/coco.yaml")
    else:
        p.add_argument("--config", help="run config YAML (see configs/); defaults apply when omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set match.min_similarity=0.25 (repeatable)")


def _summary(manifest: dict[str, Any], output: str) -> str:
    t = manifest["totals"]
    lines = [
        f"mined {output}",
        f"  images in          {t['images_in']}",
        f"  images with pairs  {t['images_with_pairs']}",
        f"  pairs              {t['pairs']}",
        f"  unique nouns       {t['unique_nouns']}",
        f"  wall time          {manifest['wall_seconds']:.1f} s",
        f"  images/s           {manifest['images_per_second']:.2f}",
    ]
    drops = t["drops"]
    lines.append(f"  dropped            {sum(drops.values())}" + ("" if drops else " (none)"))
    lines += [f"    {reason:<22}{n}" for reason, n in sorted(drops.items(), key=lambda kv: -kv[1])]
    errors = [e for s in manifest["shards"] for e in s["errors"]]
    if errors:
        lines.append(f"  shard errors       {len(errors)} (first: {errors[0]})")
    if manifest["timings"]:
        lines.append("  stage time (s)     " + ", ".join(f"{k} {v:.2f}" for k, v in manifest["timings"].items()))
    return "\n".join(lines)


def cmd_mine(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mining.pipeline import run_mining

    overrides = list(args.overrides)
    if args.executor:
        overrides.append(f"execution.executor={args.executor}")
    cfg = load_config(args.config, overrides)
    show = not args.json and sys.stderr.isatty()
    bar = tqdm(desc="shards", unit="shard", disable=not show)

    def on_shard(marker: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix(images=marker["images_in"], pairs=marker["pairs"])

    manifest = run_mining(cfg, args.input, args.output, limit=args.limit, on_shard=on_shard, progress=show,
                          overwrite=args.overwrite)
    bar.close()
    failed = manifest.get("failed_shards", [])
    if args.json:
        print(json.dumps({k: manifest[k] for k in ("totals", "timings", "wall_seconds", "images_per_second",
                                                    "config_hash")} | {"output": args.output, "failed_shards": failed}))
    else:
        print(_summary(manifest, args.output))
    if failed:
        print(f"ovmine: {len(failed)} shard(s) could not be read and were not committed: "
              + ", ".join(f"{f['input']} ({f['error']})" for f in failed[:5])
              + ("" if len(failed) <= 5 else f" and {len(failed) - 5} more")
              + "; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def _labelled(line: str, number: int) -> tuple[str, list[str]]:
    try:
        doc = json.loads(line)
        return doc["caption"], list(doc["nouns"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"--labelled line {number}: expected {{\"caption\": ..., \"nouns\": [...]}}") from None


def cmd_parse(args: argparse.Namespace) -> int:
    from mining.entities import SpacyEntityParser
    from mining.entities.evaluate import score_nouns

    cfg = load_config(args.config, args.overrides)
    parser = SpacyEntityParser(cfg.entities)
    stream = open(args.file, encoding="utf-8") if args.file and args.file != "-" else sys.stdin
    predicted, expected = [], []
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            caption, nouns = _labelled(line, number) if args.labelled else (line.rstrip("\n"), None)
            entities = parser.parse([caption])
            doc: dict[str, Any] = {"caption": caption, "entities": [e.to_json() for e in entities]}
            if nouns is not None:
                got = [e.noun for e in entities]
                doc |= {"missed": sorted(set(nouns) - set(got)), "extra": sorted(set(got) - set(nouns))}
                predicted.append(got)
                expected.append(nouns)
            print(json.dumps(doc), flush=True)
    if args.labelled:
        score = score_nouns(predicted, expected)
        print(f"{score.captions} captions: noun precision {score.precision:.3f}, recall {score.recall:.3f} "
              f"({score.true_positives} right, {score.false_positives} extra, {score.false_negatives} missed)",
              file=sys.stderr)
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from mining.synthetic import make_shards

    paths = make_shards(args.out, shards=args.shards, per_shard=args.per_shard, seed=args.seed, size=args.size)
    print(f"wrote {len(paths)} shard(s) of {args.per_shard} images to {args.out}")
    return 0


def cmd_toyworld(args: argparse.Namespace) -> int:
    from mining.toyworld.make import make_world

    summary = make_world(args.out, args.shards, args.per_shard, args.seed, args.size, _s3(args),
                         progress=not args.json and sys.stderr.isatty())
    print(json.dumps(summary) if args.json else
          f"wrote a toy world of {summary['images']} images ({summary['instances']} ground-truth instances)\n"
          f"  shards        {summary['shards_uri']}/  ({summary['shards']} tars)\n"
          f"  ground truth  {summary['ground_truth']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mining.evaluation.run import evaluate, format_eval

    report = evaluate(args.output, args.gt, synonyms=args.synonyms, iou=args.iou, unknown_nouns=args.unknown_nouns,
                      region_top1=args.region_top1, region_overrides=args.overrides, s3=_s3(args),
                      progress=not args.json and sys.stderr.isatty())
    print(json.dumps(report) if args.json else format_eval(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mining.toyworld.demo import format_demo, run_demo

    result = run_demo(args.out, shards=args.shards, per_shard=args.per_shard, seed=args.seed, teacher=args.teacher,
                      executor=args.executor, overrides=args.overrides, progress=not args.json and sys.stderr.isatty())
    print(json.dumps(result) if args.json else format_demo(result))
    return 0


def _s3(args: argparse.Namespace):
    from mining.storage import S3Options

    return S3Options(endpoint_url=args.s3_endpoint)


def cmd_train(args: argparse.Namespace) -> int:
    from mining.train.clip_trainer import train_clip
    from mining.train.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    record = train_clip(cfg, args.data, args.output, executor=args.executor, s3=_s3(args))
    if args.json:
        print(json.dumps({k: v for k, v in record.items() if k != "config"}))
    else:
        scan = record["counts"]["scan"]
        print("\n".join([
            f"trained {args.output} (Model A, mask-adapted CLIP; {record['executor']} executor, "
            f"{record['workers']} worker(s))",
            f"  pairs              {scan['pairs'] - scan['filtered']} of {scan['pairs']} "
            f"({len(record['vocabulary'])} nouns)",
            f"  steps              {record['steps']} x {record['samples_per_step']} crops",
            f"  loss               {record['first_loss']} -> {record['final_loss']}",
            f"  samples/s          {record['samples_per_s']}",
            f"  wall time          {record['seconds']:.1f} s",
            f"  use it             --set regions.model={record['model']} --set regions.pretrained=null",
        ]))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from mining.stats import compute_stats, format_stats

    stats = compute_stats(args.output, _s3(args), top_k=args.top)
    if args.html:
        from mining.report import render_report
        from mining.storage import write_bytes_atomic

        page = render_report(args.output, stats, _s3(args), gallery=args.gallery, seed=args.seed)
        write_bytes_atomic(args.html, page.encode(), _s3(args))
    print(json.dumps(stats) if args.json else format_stats(stats) + (f"\nreport: {args.html}" if args.html else ""))
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from mining.curate import CurationFilters, curate, read_noun_list, read_synonyms

    filters = CurationFilters(
        min_similarity=args.min_similarity, min_margin=args.min_margin, min_noun_count=args.min_noun_count,
        max_per_noun=args.max_per_noun,
        nouns_allow=read_noun_list(args.nouns_allow) if args.nouns_allow else None,
        nouns_deny=read_noun_list(args.nouns_deny) if args.nouns_deny else [],
        synonyms=read_synonyms(args.merge_synonyms) if args.merge_synonyms else {})
    manifest = curate(args.input, args.output, filters, _s3(args))
    t, before = manifest["totals"], manifest["lineage"]["input_totals"]
    if args.json:
        print(json.dumps({"output": args.output, "totals": t, "input_totals": before,
                          "config_hash": manifest["config_hash"]}))
    else:
        print(f"curated {args.input} -> {args.output}\n"
              f"  images  {before['images_with_pairs']} -> {t['images_with_pairs']}\n"
              f"  pairs   {before['pairs']} -> {t['pairs']}\n"
              f"  nouns   {before['unique_nouns']} -> {t['unique_nouns']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mining.export_coco import export_coco

    counts = export_coco(args.output, args.dest, args.images_dir, _s3(args))
    print(json.dumps(counts) if args.json else
          f"wrote {args.dest}: {counts['images']} images, {counts['annotations']} annotations, "
          f"{counts['categories']} categories" +
          (f"; {counts['images_written']} images in {args.images_dir}" if args.images_dir else ""))
    return 0


def _env_pairs(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--env {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        env[key] = value
    return env


def cmd_submit(args: argparse.Namespace) -> int:
    from jobs.submit import mine_entrypoint, submit

    load_config(args.config, args.overrides)   # a bad config fails here, not minutes later on the cluster
    entrypoint = mine_entrypoint(args.config, args.input, args.output, args.overrides, args.limit, args.overwrite)
    job_id = submit(args.address, entrypoint, None if args.no_working_dir else args.working_dir,
                    _env_pairs(args.env), args.submission_id)
    print(json.dumps({"submission_id": job_id, "entrypoint": entrypoint}) if args.json else
          f"submitted {job_id}\n  {entrypoint}\n  follow: ovmine jobs logs {job_id} --address {args.address}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from jobs import submit as jobs_api

    if args.action == "list":
        rows = jobs_api.list_jobs(args.address)
        if args.json:
            print(json.dumps(rows))
        else:
            for row in rows:
                print(f"{row['submission_id']:<28}{row['status']:<11}{row['entrypoint']}")
        return 0
    if not args.job_id:
        raise ValueError(f"ovmine jobs {args.action} needs a submission id")
    if args.action == "status":
        state = jobs_api.status(args.address, args.job_id)
        print(json.dumps({"submission_id": args.job_id, "status": state}) if args.json else state)
    elif args.action == "logs":
        print(jobs_api.logs(args.address, args.job_id), end="")
    elif args.action == "stop":
        stopped = jobs_api.stop(args.address, args.job_id)
        print(json.dumps({"submission_id": args.job_id, "stopped": stopped}) if args.json else
              ("stop requested" if stopped else "job had already finished"))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from mining.validate import check_output

    figures = check_output(args.output, _s3(args))
    print(json.dumps(figures) if args.json else
          f"{args.output}: valid ({figures['shards']} shards, {figures['records']} records, {figures['pairs']} pairs; "
          f"{figures['images_in']} images in = {figures['images_with_pairs']} with pairs + "
          f"{sum(figures['drops'].values())} dropped)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovmine", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("mine", help="mine mask–noun pairs from image–caption shards")
    _add_config_args(p, required=True)
    p.add_argument("--input", nargs="+", required=True,
                   help="shards: paths, directories, brace patterns (data/{00000..00009}.tar), s3:// URIs")
    p.add_argument("--output", required=True, help="output directory or s3:// prefix")
    p.add_argument("--limit", type=positive_int, help="mine only the first N images (in input order)")
    p.add_argument("--executor", choices=["ray", "local"], help="shortcut for --set execution.executor=...")
    p.add_argument("--overwrite", action="store_true",
                   help="mine every shard again, even those already committed in OUTPUT")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("parse", help="print the entities of captions, one JSON object per caption")
    _add_config_args(p)
    p.add_argument("file", nargs="?", help="one caption per line; stdin when omitted or '-'")
    p.add_argument("--labelled", action="store_true",
                   help='lines are {"caption": ..., "nouns": [...]}: also print what was missed or extra, '
                        "and noun precision/recall on stderr")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("sample-data", help="write a small generated image–caption dataset (webdataset shards)")
    p.add_argument("out")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--per-shard", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("toyworld", help="the synthetic scene world with ground truth")
    what = p.add_subparsers(dest="action", required=True)
    t = what.add_parser("make", help="write world shards (webdataset) and COCO ground truth")
    t.add_argument("out", help="directory or s3:// prefix: OUT/shards/*.tar and OUT/ground_truth.json")
    t.add_argument("--shards", type=int, default=2)
    t.add_argument("--per-shard", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--size", type=int, default=128, help="image side in pixels")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_toyworld)

    p = sub.add_parser("eval", help="score a mining output against COCO-format ground truth")
    p.add_argument("output", help="a mining (or curated) output, local or s3://")
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="make a toy world, mine it on local Ray with the shipped models, and score it")
    p.add_argument("--out", default="toyworld-demo", help="working directory (world, mined output, config)")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--per-shard", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", choices=["mask2former", "felzenszwalb"], default="mask2former",
                   help="the shipped tiny Mask2Former, or the weights-free baseline")
    p.add_argument("--executor", choices=["ray", "local"], default="ray")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the demo config")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("validate", help="check a mining output against schemas/ and its own counts")
    p.add_argument("output")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="train a model from mined pairs")
    what = p.add_subparsers(dest="model", required=True)
    tc = what.add_parser("clip", help="Model A: fine-tune CLIP's image tower on masked crops (OVSeg)")
    _add_config_args(tc, required=True)
    tc.add_argument("--data", nargs="+", required=True, help="mining (or curated) outputs, local or s3://")
    tc.add_argument("--output", required=True, help="folder for the open_clip local-dir model and training.json")
    tc.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: in-process, one worker; ray: Ray Train (workers, checkpoints, resume)")
    tc.add_argument("--s3-endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(func=cmd_train)

    p = sub.add_parser("stats", help="statistics of a mining output; --html writes a report with a gallery")
    p.add_argument("output", help="a mining (or curated) output, local or s3://")
    p.add_argument("--json", action="store_true")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (local or s3://)")
    p.add_argument("--top", type=int, default=20, metavar="K", help="how many of the most frequent nouns")
    p.add_argument("--gallery", type=int, default=24, metavar="N",
                   help="pairs in each gallery (random sample, lowest similarity)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random gallery sample")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("curate", help="write a filtered copy of a mining output, in the same schema")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--min-similarity", type=float)
    p.add_argument("--min-margin", type=float)
    p.add_argument("--min-noun-count", type=int, metavar="N", help="drop nouns with fewer surviving pairs")
    p.add_argument("--max-per-noun", type=int, metavar="K", help="keep each noun's K most similar pairs")
    p.add_argument("--nouns-allow", metavar="FILE", help="only these nouns (one per line)")
    p.add_argument("--nouns-deny", metavar="FILE", help="never these nouns (one per line)")
    p.add_argument("--merge-synonyms", metavar="FILE", help="YAML 'canonical: [synonym, ...]'; applied first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("export", help="export a mining output to another format")
    fmt = p.add_subparsers(dest="format", required=True)
    c = fmt.add_parser("coco", help="COCO instances JSON (RLE masks, one category per noun)")
    c.add_argument("output", help="a mining (or curated) output, local or s3://")
    c.add_argument("dest", help="coco.json path or s3:// URI")
    c.add_argument("--images-dir", help="also write the images, in the masks' frame, named like file_name")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_export)

    p = sub.add_parser("submit", help="submit a run to a Ray cluster through the Job Submission API")
    what = p.add_subparsers(dest="job", required=True)
    m = what.add_parser("mine", help="submit `ovmine mine` as a Ray job")
    m.add_argument("--address", required=True, help="the dashboard address, e.g. http://HEAD:8265")
    _add_config_args(m, required=True)
    m.add_argument("--input", nargs="+", required=True)
    m.add_argument("--output", required=True)
    m.add_argument("--limit", type=positive_int)
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--working-dir", default=".", help="uploaded as the job's working directory (default: .)")
    m.add_argument("--no-working-dir", action="store_true", help="the cluster image already holds configs and code")
    m.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the job")
    m.add_argument("--submission-id", help="a job id of your choosing (default: Ray picks one)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="list, follow and stop Ray jobs")
    p.add_argument("action", choices=["list", "status", "logs", "stop"])
    p.add_argument("job_id", nargs="?")
    p.add_argument("--address", required=True, help="the dashboard address, e.g. http://HEAD:8265")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)

    for command in (sub.choices["validate"], sub.choices["stats"], sub.choices["curate"], c, t, sub.choices["eval"]):
        command.add_argument("--s3-endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")
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


if __name__ == "__main__":
    sys.exit(main())
