"""Submit and follow ovmine runs through Ray's Job Submission API (the dashboard's HTTP address).

The job's driver runs `python -m jobs.mine ...` (the repository's jobs/ folder) on the head node; the local
working directory (configs, code) travels with it as the job's runtime environment unless the cluster image
already holds what it needs.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

WORKING_DIR_EXCLUDES = [".venv", ".git", "**/__pycache__", "runs", "demo-data", "demo-output", "*.tar",
                        "*.parquet"]
CONNECT_SECONDS = 3.0    # a live head accepts a TCP connection at once, however busy: a dead address must not hang
ANSWER_SECONDS = 30.0    # a busy dashboard may be slow to answer; the client's own requests have no timeout at all


def check_address(address: str) -> None:
    """Refuse what is not a dashboard's HTTP address, naming the fix. Ray reads an address without a scheme as
    a cluster (GCS) address and waits 40 s for a GCS that a dashboard port never answers as."""
    if "://" not in address:
        raise ValueError(f"--address {address} has no scheme: use http://{address} (the Ray dashboard's address, "
                         f"port 8265 by default)")
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"--address {address}: the Job Submission API needs the Ray dashboard's http:// or "
                         f"https:// address, e.g. http://{parsed.hostname or 'HEAD'}:8265")


def probe(address: str) -> None:
    """Fail within seconds, naming the address, when nothing accepts connections there, and within
    ANSWER_SECONDS when something does but does not answer HTTP: the client's own check has no timeout, so an
    unreachable host would hang it for minutes."""
    parsed = urlparse(address)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    fix = "check the address and that the cluster is up (`ray status` on the head node)"
    try:
        socket.create_connection((parsed.hostname, port), timeout=CONNECT_SECONDS).close()
    except OSError as err:   # refused, unreachable, unknown host, timed out
        raise ConnectionError(f"no Ray dashboard answers at {address} ({_reason(err)}): {fix}") from None
    try:
        with urllib.request.urlopen(address.rstrip("/") + "/api/version", timeout=ANSWER_SECONDS):
            pass
    except urllib.error.HTTPError:
        return   # something answers: the client's version check says whether it is a Ray dashboard
    except OSError as err:   # URLError is an OSError
        raise ConnectionError(f"{address} accepts connections but gave no HTTP answer ({_reason(err)}): is it the "
                              f"dashboard's port (8265 by default)? {fix}") from None


def _reason(err: OSError) -> str:
    reason = getattr(err, "reason", None) or err   # URLError wraps the socket's error
    return str(reason) or type(reason).__name__


class JobsApiError(ValueError):
    """The dashboard refused a request (unknown job id, not a Ray dashboard, ...): its own words, on one line."""


TOKEN_FILE = os.path.join("~", ".ray", "auth_token")


def cluster_token() -> tuple[str, str] | None:
    """The token for a cluster started with token authentication (what `ray start --head` does once a token
    exists), found where Ray's own CLI looks: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, then
    ~/.ray/auth_token. Returns (token, where it came from), or None."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    for path, name in ((os.environ.get("RAY_AUTH_TOKEN_PATH"), "RAY_AUTH_TOKEN_PATH"),
                       (os.path.expanduser(TOKEN_FILE), TOKEN_FILE)):
        if path and os.path.isfile(path):
            with open(path) as f:
                token = f.read().strip()
            if token:
                return token, f"{name} ({path})" if name == "RAY_AUTH_TOKEN_PATH" else name
    return None


def _token_problem(address: str, token: tuple[str, str] | None) -> JobsApiError:
    fix = ("set RAY_AUTH_TOKEN to the cluster's token, or put it in ~/.ray/auth_token (or the file "
           "RAY_AUTH_TOKEN_PATH names); `ray get-auth-token` on the head node prints it")
    if token is None:
        return JobsApiError(f"the Ray cluster at {address} requires an authentication token and none was found: "
                            f"{fix}")
    return JobsApiError(f"the Ray cluster at {address} refused the authentication token from {token[1]}: {fix}")


@contextlib.contextmanager
def _api_errors(address: str, token: tuple[str, str] | None = None) -> Iterator[None]:
    try:
        yield
    except AuthenticationError:   # a RuntimeError too: told apart first
        raise _token_problem(address, token) from None
    except RuntimeError as err:   # Ray's client raises RuntimeError with the server's reply
        raise JobsApiError(f"{address}: {' '.join(str(err).split()).rstrip('.')}") from None


class Jobs:
    """Ray's job client for `address`, its requests carrying the cluster's token when there is one, and its
    errors (the server's reply, a missing or refused token) turned into one line each."""

    def __init__(self, address: str) -> None:
        check_address(address)
        probe(address)
        self.address, self.token = address, cluster_token()
        # a cluster without token authentication ignores the header
        headers = {"Authorization": f"Bearer {self.token[0]}"} if self.token else None
        with self.errors():
            self.api = JobSubmissionClient(address, headers=headers)

    def errors(self):
        return _api_errors(self.address, self.token)


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


def train_entrypoint(model: str, config: str, data: list[str], output: str, overrides: list[str]) -> str:
    """`ovmine train MODEL` on Ray Train inside the job (it joins the job's cluster through RAY_ADDRESS)."""
    parts = ["python", "-m", "jobs.train", model, "--config", config, "--data", *data, "--output", output]
    for item in overrides:
        parts += ["--set", item]
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
    jobs = Jobs(address)
    with jobs.errors():
        return jobs.api.submit_job(entrypoint=entrypoint, runtime_env=runtime_env(working_dir, env),
                                   submission_id=submission_id, metadata={"tool": "ovmine"})


def list_jobs(address: str) -> list[dict[str, Any]]:
    client = Jobs(address)
    with client.errors():
        jobs = client.api.list_jobs()
    return [{"submission_id": j.submission_id, "status": str(j.status.value), "entrypoint": j.entrypoint,
             "start_time": j.start_time, "end_time": j.end_time} for j in jobs]


def status(address: str, job_id: str) -> str:
    jobs = Jobs(address)
    with jobs.errors():
        return str(jobs.api.get_job_status(job_id).value)


def logs(address: str, job_id: str) -> str:
    jobs = Jobs(address)
    with jobs.errors():
        return jobs.api.get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    jobs = Jobs(address)
    with jobs.errors():
        return jobs.api.stop_job(job_id)


def is_terminal(state: str) -> bool:
    return JobStatus(state).is_terminal()
