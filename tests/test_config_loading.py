"""Configs load the same way wherever they are loaded: placeholders are filled in by the loader itself, and
the manifest names the weights a run really used."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mining.config import ConfigError, build_config, load_config
from mining.sinks.manifest import model_ids

WEIGHTS = Path("mining/toyworld/weights").resolve()


def test_toyworld_placeholder_is_filled_by_the_loader():
    cfg = load_config("mining/toyworld/demo.yaml")
    assert cfg.teacher.mask2former.model == str(WEIGHTS / "mask2former")
    assert cfg.regions.model == f"local-dir:{WEIGHTS / 'clip'}"
    assert build_config({}, ["regions.model=local-dir:${TOYWORLD_WEIGHTS}/clip"]).regions.model == cfg.regions.model


def test_unknown_placeholder_names_the_field():
    with pytest.raises(ConfigError, match=r"regions\.model: unknown placeholder \$\{HOME_DIR\}"):
        build_config({"regions": {"model": "local-dir:${HOME_DIR}/clip"}})


def test_manifest_names_folder_weights_as_weights_not_random_init():
    shipped = model_ids(load_config("mining/toyworld/demo.yaml"))["clip"]
    assert shipped == f"local-dir:{WEIGHTS / 'clip'}" and "random" not in shipped
    assert model_ids(load_config("configs/tiny.yaml"))["clip"] == "ovmine-tiny-vit (random init)"
    assert model_ids(build_config({}, ["regions.pretrained=openai"]))["clip"] == "ViT-B-16 @ openai"


def test_mine_command_runs_the_demo_config(tmp_path):
    from mining.toyworld.make import make_world

    world = make_world(str(tmp_path / "world"), shards=1, per_shard=3, seed=5, progress=False)
    out = tmp_path / "mined"
    result = subprocess.run([sys.executable, "-m", "mining.cli", "mine", "--config", "mining/toyworld/demo.yaml",
                             "--input", world["shards_uri"], "--output", str(out), "--executor", "local", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["images_in"] == 3
    assert manifest["models"]["clip"] == f"local-dir:{WEIGHTS / 'clip'}"


@pytest.mark.parametrize("yaml_text,field", [
    ("storage:\n  region: 2024-01-01\n", "storage.region"),
    ("regions:\n  mode: mask_pooling\n  model: convnext_base\n  scales: [0]\n", "regions.scales.0"),
    ("regions:\n  mode: mask_pooling\n  model: convnext_base\n  scales: [-64]\n", "regions.scales.0"),
    ("teacher:\n  felzenszwalb:\n    scales: [-1]\n", "teacher.felzenszwalb.scales.0"),
    ("match:\n  temperature: .inf\n", "match.temperature"),
    ("match:\n  min_similarity: .nan\n", "match.min_similarity"),
    ("source: 5\n", "source: Input should be a valid dictionary"),   # not a section: no moved-field check trips
])
def test_nonsense_values_are_refused_naming_the_field(tmp_path, yaml_text, field):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(path)


def test_mine_never_falls_back_to_hub_weights(tmp_path, capsys):
    from mining.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["mine", "--input", "x.tar", "--output", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "--config" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["mine", "--config", str(empty), "--input", "x.tar", "--output", str(tmp_path / "o")]) == 2
    assert "is empty; start from configs/tiny.yaml" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_limit_must_be_a_positive_count(tmp_path, capsys, limit):
    from mining.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["mine", "--config", "configs/tiny.yaml", "--input", "x.tar", "--output", str(tmp_path / "o"),
              "--limit", limit])
    assert exit_.value.code == 2 and "--limit" in capsys.readouterr().err


def test_one_storage_section_for_mining_and_training():
    """S3 settings live in `storage:` for every config; they decide how data is reached, not what is computed,
    so they are outside both the mining and the training hash. An old config's `source.s3_*` is told where
    its setting went."""
    from mining.train.checkpoints import plan_hash
    from mining.train.clip_trainer import TrainPlan
    from mining.train.config import build_train_config

    plain, elsewhere = build_config({}), build_config({"storage": {"endpoint_url": "http://127.0.0.1:9000"}})
    assert elsewhere.storage.endpoint_url == "http://127.0.0.1:9000"
    assert plain.config_hash() == elsewhere.config_hash()
    assert plain.config_hash() != build_config({}, ["match.min_similarity=0.3"]).config_hash()
    with pytest.raises(ConfigError, match=r"source\.s3_endpoint_url is now storage\.endpoint_url"):
        build_config({"source": {"s3_endpoint_url": "http://127.0.0.1:9000"}})
    with pytest.raises(ConfigError, match=r"--set source\.s3_max_attempts: .* is now storage\.max_attempts"):
        build_config({}, ["source.s3_max_attempts=3"])

    def plan(storage):
        cfg = build_train_config({"steps": 1, "storage": storage})
        return TrainPlan(cfg=cfg.resolved(), sources=[], vocabulary=["a"], total_steps=1, regions={}, crop={})
    near, far = plan({}), plan({"endpoint_url": "http://127.0.0.1:9000", "max_attempts": 3})
    assert far.s3_options().endpoint_url == "http://127.0.0.1:9000" and far.s3_options().max_attempts == 3
    assert plan_hash("clip", near) == plan_hash("clip", far)
    with pytest.raises(ConfigError, match=r"storage\.regoin"):
        build_train_config({"steps": 1, "storage": {"regoin": "x"}})
