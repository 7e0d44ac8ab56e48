"""Submit and follow ovmine runs through Ray's Job Submission API (the dashboard's HTTP address).

The job's driver runs `python -m jobs.mine ...` (the repository's jobs/ folder) on the head node; the local
working directory (configs, code) travels with it as the job's runtime environment unless the cluster image
already holds what it needs.
"""
from __future__ import annotations

import os
import shlex
from typing import Any

from ray.job_submission import JobStatus, JobSubmissionClient

WORKING_DIR_EXCLUDES = [".venv", ".git", "**/__pycache__", "runs", "demo-data", "demo-output", "*.tar",
                        "*.parquet"]


def client(address: str) -> JobSubmissionClient:
    return JobSubmissionClient(address)


def mine_entrypoint(config: str | None, inputs: list[str], output: str, overrides: list[str],
                    limit: int | None = None, overwrite: bool = False) -> str:
    parts = ["python", "-m", "jobs.mine", "--output", output, "--input", *inputs]
    if config:
        parts += ["--config", config]
    for item in overrides:
        parts += ["--set", item]
    if limit is not None:
        parts += ["--limit", str(limit)]
    if overwrite:
        parts.append("--overwrite")
    return shlex.join(parts)


def runtime_env(working_dir: str | None, env: dict[str, str]) -> dict[str, Any]:
    renv: dict[str, Any] = {}
    if working_dir:
        renv["working_dir"] = os.path.abspath(working_dir)
        renv["excludes"] = WORKING_DIR_EXCLUDES
    if env:
        renv["env_vars"] = env
    return renv


def submit(address: str, entrypoint: str, working_dir: str | None, env: dict[str, str],
           submission_id: str | None = None) -> str:
    return client(address).submit_job(entrypoint=entrypoint, runtime_env=runtime_env(working_dir, env),
                                      submission_id=submission_id,
                                      metadata={"tool": "ovmine"})


def list_jobs(address: str) -> list[dict[str, Any]]:
    jobs = client(address).list_jobs()
    return [{"submission_id": j.submission_id, "status": str(j.status.value), "entrypoint": j.entrypoint,
             "start_time": j.start_time, "end_time": j.end_time} for j in jobs]


def status(address: str, job_id: str) -> str:
    return str(client(address).get_job_status(job_id).value)


def logs(address: str, job_id: str) -> str:
    return client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    return client(address).stop_job(job_id)


def is_terminal(state: str) -> bool:
    return JobStatus(state).is_terminal()
