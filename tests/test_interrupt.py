"""Interrupting `ovmine mine` on Ray and running the same command again gives the output of an uninterrupted
run: same shards, same records, no duplicates (floats up to noise: see same_output.py).

One output goes through both interruptions a run can meet: SIGTERM, as a scheduler sends it, which unwinds
like Ctrl-C; then the same command again, killed outright with SIGKILL, which leaves its output lease
behind; then the same command once more, which finishes. Every shard the interrupted runs committed must
come out of that chain exactly as an uninterrupted run makes it. (A chain costs three runs of ~20 s each
where two separate interruptions cost four.)

The SIGTERM run starts its own Ray, as a user's run does, because what it proves includes that Ray goes with
it. The later runs join the session's cluster: what they prove does not depend on who started Ray."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import FAULT_PER_SHARD, FAULT_SHARDS
from mining.postrun.validate import check_output
from same_output import assert_same_output

pytestmark = pytest.mark.timeout(900)


def mine_command(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mining.cli", "mine", "--config", "configs/tiny.yaml", "--input", str(root / "in"),
            "--output", str(out), "--json"]


def committed(out: Path) -> int:
    return len(list((out / "_done").glob("*.json")))


def processes_of_session(sid: int) -> dict[int, str]:
    """pid -> name of every live process in the session a run was started in. Ray's processes (GCS, raylet,
    agents, workers) stay in their driver's session, so none may be left once the run has ended; other runs'
    Ray processes on this machine are not in it."""
    found = {}
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc.name()
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            pass
    return found


def signal_after_a_commit(root: Path, out: Path, sig: int, env: dict) -> tuple[subprocess.Popen, str, set[str]]:
    """Run the command and send `sig` once it has committed a shard more than the output held; returns the
    process, its stderr and the names of its session's processes when the signal went."""
    before = committed(out)
    proc = subprocess.Popen(mine_command(root, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and committed(out) == before:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    running = set(processes_of_session(proc.pid).values())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc, err, running


def interrupt(root: Path, out: Path, sig: int, env: dict, saved: Path) -> tuple[subprocess.Popen, str, set[str]]:
    """signal_after_a_commit, cutting the run in the middle: a small run can commit its last shards in one burst
    faster than the signal lands, and such an attempt, which cut nothing, is tried again from the output as
    it was before it."""
    if out.exists():
        shutil.copytree(out, saved)
    for _ in range(3):
        proc, err, running = signal_after_a_commit(root, out, sig, env)
        if committed(out) < FAULT_SHARDS:
            break
        shutil.rmtree(out)
        if saved.exists():
            shutil.copytree(saved, out)
    return proc, err, running


def test_interrupted_runs_then_a_rerun_equal_an_uninterrupted_run(fault_reference, ray_cluster, tmp_path):
    data, out = fault_reference, tmp_path / "out"

    # a scheduler's stop: unwinds like Ctrl-C, Ray shut down, a message, exit 130
    own_ray = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc, err, running = interrupt(data, out, signal.SIGTERM, own_ray, tmp_path / "before-sigterm")
    stopped_at = committed(out)
    assert 1 <= stopped_at < FAULT_SHARDS, "the run was cut in the middle"
    assert proc.returncode == 130 and "rerun the same command" in err and "Traceback" not in err
    assert {"raylet", "gcs_server"} <= running, "the run started its own Ray, in its own session"
    deadline = time.time() + 30
    while processes_of_session(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = processes_of_session(proc.pid)
    assert not left, f"Ray processes outlived the run that started them: {sorted(left.values())}"
    assert not (out / "manifest.json").exists()

    # the same command again, killed outright once it has committed more: its lease is left behind
    proc, _, _ = interrupt(data, out, signal.SIGKILL, ray_cluster.driver_env, tmp_path / "before-sigkill")
    assert stopped_at < committed(out) < FAULT_SHARDS, "the second run was cut in the middle"
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()

    rerun = subprocess.run(mine_command(data, out), capture_output=True, text=True, timeout=600,
                           env=ray_cluster.driver_env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["totals"]["images_in"] == FAULT_SHARDS * FAULT_PER_SHARD
    assert_same_output(str(out), str(data / "reference"))
    assert sorted(p.name for p in (out / "shards").iterdir()) == \
        sorted(p.name for p in (data / "reference" / "shards").iterdir())
    check_output(str(out))
