"""A real multi-node Ray cluster on loopback for tests: `ray start --head` plus worker nodes, each a separate
raylet with its own (fake, when asked) GPUs, started and stopped by the test."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, temp_dir: Path) -> None:
        self.temp_dir = temp_dir
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        # job entrypoints run `python ...` from PATH: the cluster's environment is this venv, as in the image
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = dict(os.environ, PATH=path, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        self.workers: list[dict] = []

    def _ray(self, *args: str, timeout: int = 120) -> str:
        return subprocess.run([RAY, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                              check=True).stdout

    def start_head(self, num_cpus: int = 2, num_gpus: int = 0) -> None:
        self._ray("start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
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

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=self.env, timeout=120)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
