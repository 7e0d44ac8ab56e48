"""Commands that talk to a Ray cluster: `submit`, `jobs`."""
from __future__ import annotations

import argparse
import json
import os

from mining.cli.common import add_command, add_config_args, add_json, positive_int, report
from mining.config import load_config


def _env_pairs(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--env {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        env[key] = value
    return env


def _entrypoint(args: argparse.Namespace) -> str:
    """The job's command line; its config is loaded here, so a bad one fails now, not minutes later on the cluster."""
    from mining.cluster.submit import mine_entrypoint, train_entrypoint

    if args.job == "mine":
        load_config(args.config, args.overrides)
        return mine_entrypoint(args.config, args.input, args.output, args.overrides, args.limit, args.overwrite)
    if args.model == "clip":
        from mining.train.config import load_train_config

        load_train_config(args.config, args.overrides)
    else:
        from mining.train.segmenter_config import load_segmenter_config

        load_segmenter_config(args.config, args.overrides)
    return train_entrypoint(args.model, args.config, args.data, args.output, args.overrides)


def cmd_submit(args: argparse.Namespace) -> int:
    from mining.cluster.submit import submit

    entrypoint = _entrypoint(args)
    job_id = submit(args.address, entrypoint, None if args.no_working_dir else args.working_dir,
                    _env_pairs(args.env), args.submission_id)
    report(args, {"submission_id": job_id, "entrypoint": entrypoint},
           f"submitted {job_id}\n  {entrypoint}\n  follow: ovmine jobs logs {job_id} --address {args.address}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from mining.cluster import submit as jobs_api

    if args.action == "list":
        rows = jobs_api.list_jobs(args.address)
        if args.json:
            print(json.dumps(rows))
        else:
            for row in rows:
                print(f"{row['submission_id']:<28}{row['status']:<11}{row['entrypoint']}")
        return 0
    if args.action == "status":
        state = jobs_api.status(args.address, args.job_id)
        print(json.dumps({"submission_id": args.job_id, "status": state}) if args.json else state)
    elif args.action == "logs":
        text = jobs_api.logs(args.address, args.job_id)
        print(json.dumps({"submission_id": args.job_id, "logs": text}) if args.json else text,
              end="\n" if args.json else "")
    elif args.action == "stop":
        stopped = jobs_api.stop(args.address, args.job_id)
        report(args, {"submission_id": args.job_id, "stopped": stopped},
               "stop requested" if stopped else "job had already finished")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "submit", "submit a run to a Ray cluster through the Job Submission API",
                    "ovmine submit mine --address http://HEAD:8265 --config configs/coco.yaml "
                    "--input 's3://bucket/cc3m/{00000..00331}.tar' --output s3://bucket/mined/cc3m")
    what = p.add_subparsers(dest="job", required=True)
    m = add_command(what, "mine", "submit `ovmine mine` as a Ray job",
                    "ovmine submit mine --address http://HEAD:8265 --config configs/coco.yaml "
                    "--input 's3://bucket/cc3m/{00000..00331}.tar' --output s3://bucket/mined/cc3m")
    add_address(m)
    add_config_args(m, required=True)
    m.add_argument("--input", nargs="+", required=True, help="shards: paths, brace patterns, s3:// URIs")
    m.add_argument("--output", required=True, help="output s3:// prefix (or a folder the cluster shares)")
    m.add_argument("--limit", type=positive_int, help="mine only the first N images (in input order)")
    m.add_argument("--overwrite", action="store_true", help="mine every shard again, even committed ones")
    _add_job_options(m)

    t = add_command(what, "train", "submit `ovmine train clip|segmenter` as a Ray job (Ray Train on the cluster)",
                    "ovmine submit train clip --address http://HEAD:8265 --config configs/train_clip_toyworld.yaml "
                    "--data s3://bucket/mined/cc3m --output s3://bucket/models/clip-adapted --set workers=4")
    models = t.add_subparsers(dest="model", required=True, metavar="{clip,segmenter}")
    for model, summary, config in (("clip", "Model A, the mask-adapted CLIP", "train_clip_toyworld"),
                                   ("segmenter", "Model B, the open-vocabulary segmenter", "train_segmenter_swinl")):
        m = add_command(models, model, f"submit `ovmine train {model}` ({summary}) as a Ray job",
                        f"ovmine submit train {model} --address http://HEAD:8265 --config {config} "
                        f"--data s3://bucket/mined/cc3m --output s3://bucket/models/{model} --set workers=4")
        add_address(m)
        add_config_args(m, required=True)
        m.add_argument("--data", nargs="+", required=True, help="mining (or curated) outputs, s3:// or shared folders")
        m.add_argument("--output", required=True, help="where the trained model goes (s3:// or a shared folder)")
        _add_job_options(m)

    p = add_command(sub, "jobs", "list, follow and stop Ray jobs",
                    "ovmine jobs list --address http://HEAD:8265", "ovmine jobs logs JOB_ID --address http://HEAD:8265")
    actions = p.add_subparsers(dest="action", required=True, metavar="{list,status,logs,stop}")
    for action, summary, printed in JOB_ACTIONS:
        a = add_command(actions, action, summary, f"ovmine jobs {action}{'' if action == 'list' else ' JOB_ID'} "
                                                  f"--address http://HEAD:8265")
        if action != "list":
            a.add_argument("job_id", metavar="JOB_ID", help="the submission id (`ovmine jobs list` shows them)")
        add_address(a)
        add_json(a, printed)
        a.set_defaults(func=cmd_jobs)


JOB_ACTIONS = (("list", "the cluster's jobs: id, state and command", "the jobs"),
               ("status", "a job's state (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)", "the state"),
               ("logs", "a job's output so far", "the logs"),
               ("stop", "stop a job that is still running", "whether a stop was requested"))


def add_address(p: argparse.ArgumentParser) -> None:
    """--address, defaulting as Ray's own job CLI does to RAY_API_SERVER_ADDRESS, then RAY_ADDRESS."""
    default = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    p.add_argument("--address", default=default, required=default is None,
                   help="the Ray dashboard's address, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, "
                        "else RAY_ADDRESS)")


def _add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--working-dir", default=".", help="uploaded as the job's working directory")
    p.add_argument("--no-working-dir", action="store_true", help="the cluster image already holds configs and code")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the job")
    p.add_argument("--submission-id", help="a job id of your choosing (default: Ray picks one)")
    add_json(p, "the submission id and entrypoint")
    p.set_defaults(func=cmd_submit)
