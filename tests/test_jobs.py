"""`ovmine submit mine` and `ovmine jobs ...` through Ray's Job Submission API, against a Ray head started
by the test on loopback."""
import json
import subprocess
import sys
import time

import pytest

from mining.sinks.reader import read_manifest
from mining.synthetic import make_shards
from ray_cluster import LocalCluster

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster()
    c.start_head(num_cpus=2)
    yield c
    c.stop()


def ovmine(*args, check=True):
    return subprocess.run([sys.executable, "-m", "mining.cli", *args], capture_output=True, text=True,
                          check=check, timeout=300)


def wait_for(cluster, job_id, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = json.loads(ovmine("jobs", "status", job_id, "--address", cluster.dashboard, "--json").stdout)["status"]
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            return state
        time.sleep(2)
    raise TimeoutError(job_id)


def test_submit_mine_runs_on_the_cluster(cluster, tmp_path):
    make_shards(tmp_path / "in", shards=2, per_shard=3, size=64)
    out = tmp_path / "out"
    submitted = json.loads(ovmine("submit", "mine", "--address", cluster.dashboard, "--config", "configs/tiny.yaml",
                                  "--input", str(tmp_path / "in"), "--output", str(out), "--json",
                                  "--submission-id", "ovmine-test-mine").stdout)
    assert submitted["submission_id"] == "ovmine-test-mine"
    assert wait_for(cluster, "ovmine-test-mine") == "SUCCEEDED", ovmine("jobs", "logs", "ovmine-test-mine",
                                                                        "--address", cluster.dashboard).stdout
    assert read_manifest(str(out))["totals"]["images_in"] == 6
    logs = ovmine("jobs", "logs", "ovmine-test-mine", "--address", cluster.dashboard).stdout
    assert "images in          6" in logs
    listed = json.loads(ovmine("jobs", "list", "--address", cluster.dashboard, "--json").stdout)
    assert any(j["submission_id"] == "ovmine-test-mine" and j["status"] == "SUCCEEDED" for j in listed)


def test_stop_a_running_job(cluster, tmp_path):
    make_shards(tmp_path / "in", shards=4, per_shard=8, size=64)
    ovmine("submit", "mine", "--address", cluster.dashboard, "--config", "configs/tiny.yaml",
           "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--submission-id", "ovmine-test-stop")
    stopped = json.loads(ovmine("jobs", "stop", "ovmine-test-stop", "--address", cluster.dashboard, "--json").stdout)
    assert stopped["stopped"] is True
    assert wait_for(cluster, "ovmine-test-stop") == "STOPPED"


def test_bad_config_is_refused_before_submission(cluster, tmp_path):
    result = ovmine("submit", "mine", "--address", cluster.dashboard, "--config", "configs/tiny.yaml",
                    "--set", "teacher.kind=yolo", "--input", "x", "--output", str(tmp_path), check=False)
    assert result.returncode == 2 and "teacher.kind" in result.stderr
    listed = json.loads(ovmine("jobs", "list", "--address", cluster.dashboard, "--json").stdout)
    assert all("yolo" not in j["entrypoint"] for j in listed)
