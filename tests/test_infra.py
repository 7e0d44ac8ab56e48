"""The deployment files parse, agree with each other and point at things that exist in this repository."""
import re
import shlex
from pathlib import Path

import yaml

from mining.config import load_config

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "ghcr.io/ovmine/ovmine:0.1.0"


def containers(pod_template):
    return pod_template["spec"]["containers"]


def check_entrypoint(command: str) -> None:
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "jobs.mine"], args
    assert (ROOT / "jobs" / "mine.py").is_file()
    config = args[args.index("--config") + 1]
    assert load_config(ROOT / config).execution.executor == "ray"


def test_dockerfile_installs_the_project():
    text = (ROOT / "infra" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+", text, re.M)
    for path in ("mining", "jobs", "schemas", "configs", "pyproject.toml"):
        assert re.search(rf"^COPY {re.escape(path)}\b", text, re.M), path
        assert (ROOT / path).exists()


def test_kuberay_cluster_has_a_gpu_worker_group():
    doc = yaml.safe_load((ROOT / "infra" / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    head = containers(doc["spec"]["headGroupSpec"]["template"])[0]
    assert head["image"] == IMAGE and any(p["containerPort"] == 8265 for p in head["ports"])
    (group,) = doc["spec"]["workerGroupSpecs"]
    worker = containers(group["template"])[0]
    assert worker["image"] == IMAGE
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == group["rayStartParams"]["num-gpus"] == "1"
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert doc["spec"]["enableInTreeAutoscaling"] is True


def test_kuberay_job_runs_an_existing_entrypoint():
    doc = yaml.safe_load((ROOT / "infra" / "kuberay" / "rayjob.yaml").read_text())
    assert doc["kind"] == "RayJob"
    check_entrypoint(doc["spec"]["entrypoint"])
    spec = doc["spec"]["rayClusterSpec"]
    assert all(c["image"] == IMAGE for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
               for c in containers(g["template"]))
    assert any(c["resources"]["limits"].get("nvidia.com/gpu") for g in spec["workerGroupSpecs"]
               for c in containers(g["template"]))


def test_aws_launcher_config():
    doc = yaml.safe_load((ROOT / "infra" / "aws" / "cluster.yaml").read_text())
    assert doc["provider"]["type"] == "aws" and doc["docker"]["image"] == IMAGE
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in gpu)
    assert any("--head" in c for c in doc["head_start_ray_commands"])


def test_readme_and_jobs_docstring_name_the_same_entrypoint():
    check_entrypoint("python -m jobs.mine --config configs/coco.yaml --input x --output y")
    assert "python -m jobs.mine" in (ROOT / "jobs" / "mine.py").read_text()
