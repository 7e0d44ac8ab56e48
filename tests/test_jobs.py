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


def ovmine(*args, check=True, env=None):
    return subprocess.run([sys.executable, "-m", "mining.cli", *args], capture_output=True, text=True,
                          check=check, timeout=300, env=env)


def wait_for(cluster, job_id, timeout=600):
    """The job's final state as `ovmine jobs status` reports it, once Ray's own client says it has ended (a
    poll through the CLI costs a Python start-up each)."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(cluster.dashboard, headers=cluster.headers or None)
    deadline = time.time() + timeout
    while not jobs.get_job_status(job_id).is_terminal():
        if time.time() > deadline:
            raise TimeoutError(job_id)
        time.sleep(0.5)
    return json.loads(ovmine("jobs", "status", job_id, "--address", cluster.dashboard, "--json",
                             env=getattr(cluster, "client_env", None)).stdout)["status"]


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


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """A head started the default way on a machine that has a token (~/.ray/auth_token, as Ray writes it at a
    first local `ray.init()`): `ray start --head` turns token authentication on."""
    import secrets

    from ray_cluster import LocalCluster

    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    cluster = LocalCluster(home=str(home))
    # the user's shell: the same HOME, nothing else set
    cluster.client_env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    try:
        cluster.start_head(num_cpus=2)
        yield cluster
    finally:
        cluster.stop()


def test_submit_and_jobs_find_the_token_as_rays_cli_does(token_cluster, tmp_path):
    make_shards(tmp_path / "in", shards=1, per_shard=2, size=64)
    env = token_cluster.client_env
    submitted = json.loads(ovmine("submit", "mine", "--address", token_cluster.dashboard, "--config",
                                  "configs/tiny.yaml", "--input", str(tmp_path / "in"), "--output",
                                  str(tmp_path / "out"), "--json", env=env).stdout)
    assert wait_for(token_cluster, submitted["submission_id"]) == "SUCCEEDED"
    assert read_manifest(str(tmp_path / "out"))["totals"]["images_in"] == 2
    listed = json.loads(ovmine("jobs", "list", "--address", token_cluster.dashboard, "--json", env=env).stdout)
    assert [j["status"] for j in listed] == ["SUCCEEDED"]
    # the token from the environment instead of the file
    elsewhere = dict(env, HOME=str(tmp_path), RAY_AUTH_TOKEN=token_cluster.headers["Authorization"].split()[1])
    assert ovmine("jobs", "list", "--address", token_cluster.dashboard, env=elsewhere).returncode == 0


@pytest.mark.parametrize("token,message", [
    (None, "requires an authentication token and none was found: set RAY_AUTH_TOKEN"),
    ("wrong", "refused the authentication token from RAY_AUTH_TOKEN: set RAY_AUTH_TOKEN"),
])
def test_a_missing_or_wrong_token_is_one_line_naming_where_it_goes(token_cluster, tmp_path, token, message):
    env = dict(token_cluster.client_env, HOME=str(tmp_path), **({"RAY_AUTH_TOKEN": token} if token else {}))
    for args in (["jobs", "list"], ["submit", "mine", "--config", "configs/tiny.yaml", "--input", "x", "--output",
                                    str(tmp_path / "out")]):
        result = ovmine(*args, "--address", token_cluster.dashboard, env=env, check=False)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (f"ovmine: error: the Ray cluster at {token_cluster.dashboard} {message} to the "
                                 f"cluster's token, or put it in ~/.ray/auth_token (or the file RAY_AUTH_TOKEN_PATH "
                                 f"names); `ray get-auth-token` on the head node prints it\n")
