"""Interrupting `ovmine mine` on Ray (SIGTERM as a scheduler sends it, which unwinds like Ctrl-C, or the driver
killed outright with SIGKILL, which leaves its output lease behind) and running the same command again
gives the output of an uninterrupted run: same shards, same records, no duplicates (floats up to noise:
see same_output.py)."""
import json
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from mining.config import load_config
from mining.pipeline import run_mining
from mining.synthetic import make_shards
from mining.postrun.validate import check_output
from same_output import assert_same_output

pytestmark = pytest.mark.timeout(900)
SHARDS = 8
PER_SHARD = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    make_shards(root / "in", shards=SHARDS, per_shard=PER_SHARD, size=96)
    cfg = load_config("configs/tiny.yaml", ["execution.executor=local"])
    run_mining(cfg, [str(root / "in")], str(root / "reference"))
    return root


def mine_command(root, out):
    return [sys.executable, "-m", "mining.cli", "mine", "--config", "configs/tiny.yaml", "--input", str(root / "in"),
            "--output", str(out), "--json"]


def interrupt_after_first_commit(root, out, sig) -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen(mine_command(root, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "_done").glob("*.json")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc, err, len(list((out / "_done").glob("*.json")))


def ray_processes() -> set[int]:
    """Ray's own processes on this machine (raylet, GCS, agents, workers)."""
    names = ("raylet", "gcs_server", "dashboard", "runtime_env", "ray::", "default_worker")
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(n in cmdline for n in names):
            found.add(proc.info["pid"])
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupt_and_rerun_equals_uninterrupted(data, tmp_path, sig):
    before = ray_processes()
    out = tmp_path / "out"
    # a small run can commit its last shards in one burst faster than the signal lands; such an attempt cut
    # nothing, so it is tried again on a clean output
    for _ in range(3):
        proc, err, committed = interrupt_after_first_commit(data, out, sig)
        if committed < SHARDS:
            break
        shutil.rmtree(out)
    assert 1 <= committed < SHARDS, "the run was cut in the middle"
    if sig == signal.SIGTERM:   # a scheduler's stop: unwinds like Ctrl-C, Ray shut down, a message, exit 130
        assert proc.returncode == 130 and "rerun the same command" in err and "Traceback" not in err
        deadline = time.time() + 30
        while ray_processes() - before and time.time() < deadline:
            time.sleep(0.5)
        assert not ray_processes() - before, "Ray processes outlived the run that started them"
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    rerun = subprocess.run(mine_command(data, out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["totals"]["images_in"] == SHARDS * PER_SHARD
    assert_same_output(str(out), str(data / "reference"))
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(p.name for p in (data / "reference" / "shards").iterdir())
    check_output(str(out))
