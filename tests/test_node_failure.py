"""A worker node dies while a mining job runs on a multi-node Ray cluster on loopback (the session's CPU head
and a GPU worker node with a fake GPU): its actors are lost mid-run, a replacement node joins (as an
autoscaler would bring one), the job still finishes, and the output is exactly one committed copy of each
shard, identical to a run that saw no failure."""
import json
import subprocess
import sys
import time

import pytest

from conftest import FAULT_PER_SHARD, FAULT_SHARDS
from mining.postrun.validate import check_output
from same_output import assert_same_output

pytestmark = pytest.mark.timeout(900)


def test_worker_node_killed_mid_run(ray_cluster, fault_reference, tmp_path):
    cluster, data = ray_cluster, fault_reference
    added = []
    try:
        cluster.add_worker("gpu_node_a", num_cpus=2, num_gpus=1)
        added.append("gpu_node_a")
        out = tmp_path / "out"
        # the teacher and region actors need a GPU, so they can only live on the GPU node
        proc = subprocess.Popen(
            [sys.executable, "-m", "mining.cli", "mine", "--config", "configs/tiny.yaml", "--input",
             str(data / "in"), "--output", str(out), "--json", "--set", f"execution.ray_address={cluster.address}",
             "--set", "execution.teacher.num_gpus=0.5", "--set", "execution.regions.num_gpus=0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env)
        deadline = time.time() + 400
        while time.time() < deadline and not list((out / "_done").glob("*.json")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.02)
        cluster.kill_worker("gpu_node_a")
        committed_at_kill = len(list((out / "_done").glob("*.json")))
        cluster.add_worker("gpu_node_b", num_cpus=2, num_gpus=1)
        added.append("gpu_node_b")
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-4000:]
        assert committed_at_kill < FAULT_SHARDS, "the node died while work was left"
        assert json.loads(stdout.strip().splitlines()[-1])["totals"]["images_in"] == FAULT_SHARDS * FAULT_PER_SHARD
        assert_same_output(str(out), str(data / "reference"))
        assert sorted(p.name for p in (out / "_done").iterdir()) == [f"{i:05d}.json" for i in range(FAULT_SHARDS)]
        check_output(str(out))
    finally:
        for name in added:   # the shared head goes on without the GPU nodes
            cluster.remove_worker(name)
