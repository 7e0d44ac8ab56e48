"""`ovmine submit mine` and `ovmine jobs ...` through Ray's Job Submission API, against the session's Ray head
on loopback."""
import json
import subprocess
import sys
import time

import pytest

from mining.sinks.reader import read_manifest
from mining.toyworld.make import make_shards

pytestmark = pytest.mark.timeout(900)


def ovmine(*args, check=True):
    return subprocess.run([sys.executable, "-m", "mining.cli", *args], capture_output=True, text=True,
                          check=check, timeout=300)


def wait_for(cluster, job_id, timeout=600):
    """The job's final state as `ovmine jobs status` reports it, once Ray's own client says it has ended (a
    poll through the CLI costs a Python start-up each)."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(cluster.dashboard)
    deadline = time.time() + timeout
    while not jobs.get_job_status(job_id).is_terminal():
        if time.time() > deadline:
            raise TimeoutError(job_id)
        time.sleep(0.5)
    return json.loads(ovmine("jobs", "status", job_id, "--address", cluster.dashboard, "--json").stdout)["status"]


def test_submit_mine_runs_on_the_cluster(ray_cluster, tmp_path):
    make_shards(tmp_path / "in", shards=2, per_shard=3, size=64)
    out = tmp_path / "out"
    submitted = json.loads(ovmine("submit", "mine", "--address", ray_cluster.dashboard, "--config",
                                  "configs/tiny.yaml", "--input", str(tmp_path / "in"), "--output", str(out), "--json",
                                  "--submission-id", "ovmine-test-mine").stdout)
    assert submitted["submission_id"] == "ovmine-test-mine"
    assert wait_for(ray_cluster, "ovmine-test-mine") == "SUCCEEDED", ovmine("jobs", "logs", "ovmine-test-mine",
                                                                        "--address", ray_cluster.dashboard).stdout
    assert read_manifest(str(out))["totals"]["images_in"] == 6
    logs = ovmine("jobs", "logs", "ovmine-test-mine", "--address", ray_cluster.dashboard).stdout
    assert "images in          6" in logs
    listed = json.loads(ovmine("jobs", "list", "--address", ray_cluster.dashboard, "--json").stdout)
    assert any(j["submission_id"] == "ovmine-test-mine" and j["status"] == "SUCCEEDED" for j in listed)


def test_stop_a_running_job(ray_cluster, tmp_path):
    make_shards(tmp_path / "in", shards=4, per_shard=8, size=64)
    ovmine("submit", "mine", "--address", ray_cluster.dashboard, "--config", "configs/tiny.yaml",
           "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--submission-id", "ovmine-test-stop")
    stopped = json.loads(ovmine("jobs", "stop", "ovmine-test-stop", "--address", ray_cluster.dashboard,
                                "--json").stdout)
    assert stopped["stopped"] is True
    assert wait_for(ray_cluster, "ovmine-test-stop") == "STOPPED"


def test_bad_config_is_refused_before_submission(ray_cluster, tmp_path):
    result = ovmine("submit", "mine", "--address", ray_cluster.dashboard, "--config", "configs/tiny.yaml",
                    "--set", "teacher.kind=yolo", "--input", "x", "--output", str(tmp_path), check=False)
    assert result.returncode == 2 and "teacher.kind" in result.stderr
    listed = json.loads(ovmine("jobs", "list", "--address", ray_cluster.dashboard, "--json").stdout)
    assert all("yolo" not in j["entrypoint"] for j in listed)
