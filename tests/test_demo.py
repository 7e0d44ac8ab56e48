"""`ovmine demo`, the README's main job: a toy world mined on Ray with the shipped models, and scored. The Ray
run joins the session's cluster (a Ray the CLI starts itself is covered by test_cli_ray and test_interrupt)."""
import json
import subprocess
import sys

from mining.config import load_config
from mining.postrun.validate import check_output


def test_demo_on_ray(ray_cluster, tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "mining.cli", "demo", "--out", str(out), "--shards", "2",
                           "--per-shard", "8", "--json"], capture_output=True, text=True, timeout=600,
                          env=ray_cluster.driver_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["executor"] == "ray" and result["teacher"] == "mask2former"
    assert result["world"]["images"] == 16 == result["eval"]["images"]
    e = result["eval"]
    assert result["totals"]["pairs"] == e["pairs"] > 0
    assert 0 <= e["precision"] <= 1 and 0 <= e["recall"] <= 1 and e["minable"] > 0
    assert e["region_top1"]["masks"] > 0 and result["images_per_second"] > 0
    figures = check_output(result["mined"])
    assert figures["pairs"] == e["pairs"]
    # the written config reproduces the run with the ordinary `ovmine mine`
    cfg = load_config(result["config"])
    assert cfg.regions.model.startswith("local-dir:") and cfg.teacher.kind == "mask2former"


def test_demo_text_summary_local_executor(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mining.cli", "demo", "--out", str(tmp_path / "d"), "--shards", "1",
                           "--per-shard", "6", "--executor", "local", "--teacher", "felzenszwalb"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("pairs", "unique nouns", "precision", "recall", "region top-1", "images/s"):
        assert f"\n  {line}" in proc.stdout, line
    assert "teacher felzenszwalb, local executor" in proc.stdout


def test_a_second_demo_in_the_same_folder_starts_afresh(tmp_path):
    from mining.toyworld.demo import run_demo

    first = run_demo(str(tmp_path / "d"), shards=2, per_shard=2, executor="local")
    second = run_demo(str(tmp_path / "d"), shards=1, per_shard=2, executor="local",
                      overrides=["match.min_margin=0.05"])
    assert first["totals"]["images_in"] == 4 and second["totals"]["images_in"] == 2
    assert second["world"]["images"] == 2 and check_output(second["mined"])["shards"] == 1
