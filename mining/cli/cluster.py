"""Commands that talk to a Ray cluster: `submit`, `jobs`."""
from __future__ import annotations

import argparse
import json

from mining.cli.common import add_command, add_config_args, add_json, positive_int
from mining.config import load_config


def _env_pairs(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--env {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        env[key] = value
    return env


def cmd_submit(args: argparse.Namespace) -> int:
    from mining.cluster.submit import mine_entrypoint, submit

    load_config(args.config, args.overrides)   # a bad config fails here, not minutes later on the cluster
    entrypoint = mine_entrypoint(args.config, args.input, args.output, args.overrides, args.limit, args.overwrite)
    job_id = submit(args.address, entrypoint, None if args.no_working_dir else args.working_dir,
                    _env_pairs(args.env), args.submission_id)
    print(json.dumps({"submission_id": job_id, "entrypoint": entrypoint}) if args.json else
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


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "submit", "submit a run to a Ray cluster through the Job Submission API",
                    "ovmine submit mine --address http://HEAD:8265 --config configs/coco.yaml "
                    "--input 's3://bucket/cc3m/{00000..00331}.tar' --output s3://bucket/mined/cc3m")
    what = p.add_subparsers(dest="job", required=True)
    m = add_command(what, "mine", "submit `ovmine mine` as a Ray job",
                    "ovmine submit mine --address http://HEAD:8265 --config configs/coco.yaml "
                    "--input 's3://bucket/cc3m/{00000..00331}.tar' --output s3://bucket/mined/cc3m")
    m.add_argument("--address", required=True, help="the dashboard address, e.g. http://HEAD:8265")
    add_config_args(m, required=True)
    m.add_argument("--input", nargs="+", required=True)
    m.add_argument("--output", required=True)
    m.add_argument("--limit", type=positive_int)
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--working-dir", default=".", help="uploaded as the job's working directory (default: .)")
    m.add_argument("--no-working-dir", action="store_true", help="the cluster image already holds configs and code")
    m.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the job")
    m.add_argument("--submission-id", help="a job id of your choosing (default: Ray picks one)")
    add_json(m, "the submission id and entrypoint")
    m.set_defaults(func=cmd_submit)

    p = add_command(sub, "jobs", "list, follow and stop Ray jobs",
                    "ovmine jobs list --address http://HEAD:8265", "ovmine jobs logs JOB_ID --address http://HEAD:8265")
    p.add_argument("action", choices=["list", "status", "logs", "stop"])
    p.add_argument("job_id", nargs="?")
    p.add_argument("--address", required=True, help="the dashboard address, e.g. http://HEAD:8265")
    add_json(p, "the jobs or the status")
    p.set_defaults(func=cmd_jobs)
