"""A real multi-node Ray cluster on loopback for tests: `ray start --head` plus worker nodes, each a separate
raylet with its own (fake, when asked) GPUs.

One head serves the whole session (the `ray_cluster` fixture in conftest.py): starting one costs ~10 s, more
on a loaded machine. Tests that lose a node add their own worker nodes to it and take them away again.
Everything here is scoped to this cluster's processes: `ray stop` would stop every Ray on the machine."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from conftest import free_port

RAY = str(Path(sys.executable).with_name("ray"))
# The GCS declares a node dead after `threshold` failed health checks `period` apart: 5 x 3 s by default. A
# killed raylet refuses the check at once, so 1 s apart finds it in ~5 s; a busy but live raylet still has the
# default 10 s per answer, five times over, before it is taken for dead.
FAST_NODE_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000"}


def _agent_ports() -> list[str]:
    """Free ports for a node's agents: Ray's fixed defaults (52365 and others) clash with any other Ray on the
    machine, and the job API then answers "No available agent to submit job"."""
    return [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "metrics-export-port", "runtime-env-agent-port")]


class LocalCluster:
    def __init__(self, home: str | None = None) -> None:
        """`home`: a HOME holding `.ray/auth_token`, in which `ray start --head` turns token authentication on
        (as it does by default once a token exists); None: authentication off."""
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
        self.env = dict(os.environ, PATH=path, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
                        **FAST_NODE_DEATH)
        self.env.pop("RAY_ADDRESS", None)
        self.headers: dict[str, str] = {}
        if home is not None:
            for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
                self.env.pop(name, None)
            self.env["HOME"] = home
            self.headers = {"Authorization": "Bearer " + (Path(home) / ".ray" / "auth_token").read_text().strip()}
        self.workers: list[dict] = []

    @property
    def driver_env(self) -> dict[str, str]:
        """The environment in which `ovmine mine` (whose ray.init() reads RAY_ADDRESS) joins this cluster."""
        return dict(self.env, RAY_ADDRESS=self.address)

    def _ray(self, *args: str, timeout: int = 180) -> str:
        done = subprocess.run([RAY, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"ray {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
        return done.stdout

    def start_head(self, num_cpus: int = 2, num_gpus: int = 0) -> None:
        self._ray("start", "--head", f"--port={self.port}", f"--node-ip-address={self.head_ip}",
                  f"--dashboard-host={self.head_ip}", f"--dashboard-port={self.dashboard_port}",
                  "--include-dashboard=true", f"--ray-client-server-port={free_port()}", *_agent_ports(),
                  f"--num-cpus={num_cpus}",
                  f"--num-gpus={num_gpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats")
        deadline = time.time() + 120
        while time.time() < deadline:   # the job API answers a little after `ray start` returns
            try:
                request = urllib.request.Request(f"{self.dashboard}/api/version", headers=self.headers)
                with urllib.request.urlopen(request, timeout=5) as r:
                    if json.loads(r.read()).get("ray_version"):
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("Ray dashboard did not come up")

    def add_worker(self, name: str, num_cpus: int = 2, num_gpus: int = 0) -> None:
        """Another raylet on this machine, joined to the head: a node that can be killed on its own. Its
        custom resource `name` lets a test tell when the cluster counts it."""
        node_ip = f"127.0.0.{3 + len(self.workers)}"
        self._ray("start", f"--address={self.address}", f"--node-ip-address={node_ip}", *_agent_ports(),
                  f"--num-cpus={num_cpus}",
                  f"--num-gpus={num_gpus}", f"--resources={json.dumps({name: 1})}", "--disable-usage-stats")
        (raylet,) = [p for p in self._processes()
                     if _is_raylet(p) and f"--node_ip_address={node_ip}" in _cmdline(p)]
        self.workers.append({"name": name, "ip": node_ip, "raylet": raylet})   # psutil guards against pid reuse

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker node's raylet and every process under it, as a lost machine would."""
        raylet = self._raylet(name)
        try:
            _kill([*raylet.children(recursive=True), raylet])
        except psutil.NoSuchProcess:
            pass

    def remove_worker(self, name: str, timeout: float = 120) -> None:
        """Stop a worker node and wait until the head no longer counts it, so that the next test finds the
        shared cluster as it was. SIGTERM makes a raylet leave the cluster at once; a killed one is found dead
        by the health checks within seconds."""
        raylet = self._raylet(name)
        try:
            procs = [*raylet.children(recursive=True), raylet]
            raylet.terminate()
            _, alive = psutil.wait_procs(procs, timeout=10)
            _kill(alive)
        except psutil.NoSuchProcess:
            pass
        deadline = time.time() + timeout
        while any(name in node["resources_total"] for node in self.alive_nodes()):
            if time.time() > deadline:
                raise TimeoutError(f"the head still counts worker node {name}")
            time.sleep(0.2)

    def _raylet(self, name: str) -> psutil.Process:
        (node,) = [w for w in self.workers if w["name"] == name]
        return node["raylet"]

    def alive_nodes(self) -> list[dict]:
        """The nodes the head counts as alive, from its state API (what `ray list nodes` shows)."""
        with urllib.request.urlopen(f"{self.dashboard}/api/v0/nodes?limit=1000&detail=false", timeout=30) as r:
            nodes = json.loads(r.read())["data"]["result"]["result"]
        return [node for node in nodes if node["state"] == "ALIVE"]

    def _processes(self) -> list[psutil.Process]:
        """This cluster's processes: those naming its temp dir or its GCS address, and everything under them
        (agents, workers, job drivers)."""
        marks = (str(self.temp_dir), self.address)
        roots = [p for p in psutil.process_iter(["cmdline"]) if any(m in _cmdline(p) for m in marks)]
        found: dict[int, psutil.Process] = {}
        for root in roots:
            try:
                for proc in [root, *root.children(recursive=True)]:
                    found[proc.pid] = proc
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def stop(self) -> None:
        """SIGTERM this cluster's processes, SIGKILL what is left after a few seconds."""
        procs = self._processes()
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=3)
        _kill(alive + self._processes())
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def _is_raylet(proc: psutil.Process) -> bool:
    cmd = _cmdline(proc)
    return cmd.split(" ", 1)[0].endswith("raylet")


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
