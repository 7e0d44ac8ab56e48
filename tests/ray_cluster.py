"""A real multi-node Ray cluster on loopback for tests: `ray start --head` plus worker nodes, each a separate
raylet with its own (fake, when asked) GPUs, started and stopped by the test."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from conftest import free_port

RAY = str(Path(sys.executable).with_name("ray"))


class LocalCluster:
    def __init__(self) -> None:
        # short: Ray's unix sockets live under it and their paths may not exceed 107 bytes
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ovr", dir="/tmp"))
        self.port = free_port()
        self.dashboard_port = free_port()
        # each node gets its own loopback address: Ray would swap 127.0.0.1 for the machine's network address
        self.head_ip = "127.0.0.2"
        self.address = f"{self.head_ip}:{self.port}"
        self.dashboard = f"http://{self.head_ip}:{self.dashboard_port}"
        # job entrypoints run `python ...` from PATH: the cluster's environment is this venv, as in the image
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = dict(os.environ, PATH=path, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        self.workers: list[dict] = []

    def _ray(self, *args: str, timeout: int = 120) -> str:
        return subprocess.run([RAY, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                              check=True).stdout

    def start_head(self, num_cpus: int = 2, num_gpus: int = 0) -> None:
        self._ray("start", "--head", f"--port={self.port}", f"--node-ip-address={self.head_ip}",
                  f"--dashboard-host={self.head_ip}", f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
                  f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", f"--temp-dir={self.temp_dir}",
                  "--disable-usage-stats", timeout=180)
        deadline = time.time() + 120
        while time.time() < deadline:   # the job API answers a little after `ray start` returns
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=5) as r:
                    if json.loads(r.read()).get("ray_version"):
                        return
            except OSError:
                time.sleep(1)
        raise TimeoutError("Ray dashboard did not come up")

    def add_worker(self, name: str, num_cpus: int = 2, num_gpus: int = 0) -> None:
        """Another raylet on this machine, joined to the head: a node that can be killed on its own."""
        before = {p.pid for p in _raylets()}
        node_ip = f"127.0.0.{3 + len(self.workers)}"
        self._ray("start", f"--address={self.address}", f"--node-ip-address={node_ip}", f"--num-cpus={num_cpus}",
                  f"--num-gpus={num_gpus}", f"--resources={json.dumps({name: 1})}", "--disable-usage-stats",
                  timeout=180)
        (raylet,) = [p for p in _raylets() if p.pid not in before]
        self.workers.append({"name": name, "ip": node_ip, "raylet": raylet.pid})

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker node's raylet and every process under it, as a lost machine would."""
        import psutil

        (node,) = [w for w in self.workers if w["name"] == name]
        raylet = psutil.Process(node["raylet"])
        for proc in [*raylet.children(recursive=True), raylet]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=self.env, timeout=120)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _raylets():
    import psutil

    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["cmdline"] and p.info["cmdline"][0].endswith("raylet")]
