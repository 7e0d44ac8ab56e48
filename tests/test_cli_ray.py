"""`ovmine mine` end to end on Ray, as a user runs it, and agreement with the in-process executor (the same
stages must give the same records wherever they run). The run joins the session's cluster through RAY_ADDRESS;
a Ray that `ovmine mine` starts for itself is covered by test_s3 (a whole run) and test_interrupt (its
shutdown)."""
import json
import subprocess
import sys

import pytest

from mining.pipeline import run_mining
from mining.sinks.reader import read_manifest
from mining.toyworld.make import make_shards
from mining.postrun.validate import check_output
from same_output import assert_same_output


def ovmine(*args, check=True, env=None):
    return subprocess.run([sys.executable, "-m", "mining.cli", *args], capture_output=True, text=True,
                          check=check, timeout=600, env=env)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("cli")
    make_shards(root / "in", shards=3, per_shard=4, size=96)
    out = root / "out"
    result = ovmine("mine", "--config", "configs/tiny.yaml", "--input", str(root / "in" / "{00000..00002}.tar"),
                    "--output", str(out), "--set", "source.working_size=96", "--set", "execution.chunk_size=3", "--json",
                    env=ray_cluster.driver_env)   # shards of 4 in chunks of 3: each written as two parts and joined
    return root, out, result


def test_cli_mines_on_ray_and_output_validates(ray_run):
    root, out, result = ray_run
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["totals"]["images_in"] == 12
    assert summary["images_per_second"] > 0
    manifest = read_manifest(str(out))
    assert manifest["config"]["execution"]["executor"] == "ray"
    assert sorted(s["name"] for s in manifest["shards"]) == ["00000", "00001", "00002"]
    timings = manifest["timings"]
    stages = {"decode", "entities", "teacher", "regions", "match"}
    assert stages <= set(timings) and {f"setup_{s}" for s in ("entities", "teacher", "regions")} <= set(timings)
    walls = [timings[k] for k in ("wall_ray_startup", "wall_model_loading", "wall_mining")]
    assert sum(walls) == pytest.approx(manifest["wall_seconds"], abs=0.05)   # the summary's split adds up
    assert manifest["versions"]["ray"] != "not installed"
    # the workers wrote the shards: the driver got each write's small result, and no part is left over
    assert 0 < manifest["driver"]["bytes_per_image"] <= 2048 and manifest["driver"]["cpu_seconds"] > 0
    assert not (out / "_parts").exists()
    figures = check_output(str(out))
    assert figures["images_in"] == figures["images_with_pairs"] + sum(figures["drops"].values())
    text = ovmine("validate", str(out)).stdout
    assert "valid" in text and "12 images in" in text


def test_ray_and_local_executors_agree(ray_run, tiny_cfg):
    """Also: shards mined on Ray in chunks and joined from parts equal shards mined whole in-process."""
    root, out, _ = ray_run
    from mining.config import load_config

    cfg = load_config("configs/tiny.yaml", ["source.working_size=96", "execution.executor=local",
                                              "execution.chunk_size=null"])
    run_mining(cfg, [str(root / "in")], str(root / "local"))
    assert_same_output(str(out), str(root / "local"))


def test_cli_human_summary_and_errors(tmp_path):
    make_shards(tmp_path / "in", shards=1, per_shard=2, size=64)
    result = ovmine("mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in"),
                    "--output", str(tmp_path / "out"), "--executor", "local")
    assert "images in          2" in result.stdout and "images/s" in result.stdout
    assert "driver" not in result.stdout   # in-process the driver does the work: its line only with -v (or on Ray)
    verbose = ovmine("mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in"),
                     "--output", str(tmp_path / "out-v"), "--executor", "local", "-v")
    assert "  driver             received" in verbose.stdout
    missing = ovmine("mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "nope.tar"),
                     "--output", str(tmp_path / "o2"), check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad = ovmine("mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "o3"), "--set", "regions.mode=mask_pooling", check=False)
    assert bad.returncode == 2 and "regions.mode=mask_pooling" in bad.stderr


def test_a_ray_of_its_own_refuses_more_gpus_than_it_has(tmp_path):
    """The Ray `ovmine mine` starts never gains a GPU: a stage asking for more fails at once, naming its setting,
    instead of waiting forever for a node that cannot come; nothing is written."""
    import os

    make_shards(tmp_path / "in", shards=1, per_shard=2, size=64)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = ovmine("mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in"), "--output",
                    str(tmp_path / "out"), "--set", "execution.decode.num_gpus=64", check=False, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "execution.decode.num_gpus=64" in result.stderr and "GPUs" in result.stderr
    assert not list((tmp_path / "out").rglob("*.tar"))
