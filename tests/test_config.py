import pytest

from mining.cli import main
from mining.config import ConfigError, build_config, load_config


def test_defaults_validate_and_hash_is_stable():
    a, b = build_config({}), build_config({})
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 16


def test_hash_follows_outputs_not_execution():
    base = build_config({})
    assert build_config({"execution": {"executor": "local"}}).config_hash() == base.config_hash()
    assert build_config({"match": {"min_similarity": 0.3}}).config_hash() != base.config_hash()


def test_unknown_field_is_named():
    with pytest.raises(ConfigError) as err:
        build_config({"match": {"min_similarty": 0.3}})
    assert "match.min_similarty" in str(err.value)
    assert "unknown field" in str(err.value)


def test_retired_settings_name_their_new_place():
    # one batch size and one device setting per stage: the stage sections' own copies are gone
    with pytest.raises(ConfigError, match=r"teacher.device: no longer a setting: use execution.teacher.num_gpus"):
        build_config({"teacher": {"device": "cpu"}})
    with pytest.raises(ConfigError, match=r"--set regions.batch_size=32: no longer a setting: use "
                                          r"execution.regions.batch_size"):
        build_config({}, ["regions.batch_size=32"])


def test_every_step_declares_its_resources():
    ex = build_config({"execution": {"write": {"concurrency": 3}}}).execution
    assert [r.concurrency for r in ex.stage_resources()] == [1, 2, 1, 1, 1, 1, 1, 3]   # read, decode, refine ... write
    # the optional refine stage's resources count only in a run that refines
    assert len(build_config({}).running_resources()) == 7
    assert len(build_config({"captions": {"refine": {"model": "m"}}}).running_resources()) == 8


def test_chunking_is_execution_not_output():
    base = build_config({})
    assert build_config({"execution": {"chunk_size": 8}}).config_hash() == base.config_hash()
    with pytest.raises(ConfigError, match="execution.chunk_size"):
        build_config({"execution": {"chunk_size": 0}})


def test_bad_value_is_named():
    with pytest.raises(ConfigError) as err:
        build_config({"teacher": {"kind": "yolo"}})
    assert "teacher.kind" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"regions": {"scales": []}})
    assert "regions.scales" in str(err.value)


def test_mask_pooling_needs_convnext():
    with pytest.raises(ConfigError) as err:
        build_config({"regions": {"mode": "mask_pooling", "model": "ViT-B-16"}})
    assert "regions.mode=mask_pooling" in str(err.value)
    assert build_config({"regions": {"mode": "mask_pooling", "model": "convnext_large_d_320"}})


def test_overrides_are_yaml_values():
    cfg = build_config({}, ["regions.crop_context=[1.0, 1.5]", "output.write_images=true", "regions.pretrained=null"])
    assert cfg.regions.crop_context == [1.0, 1.5]
    assert cfg.output.write_images is True
    assert cfg.regions.pretrained is None
    with pytest.raises(ConfigError, match="key=value"):
        build_config({}, ["regions.scales"])


def test_shipped_configs_load():
    tiny = load_config("configs/tiny.yaml")
    assert tiny.regions.model == "ovmine-tiny-vit" and tiny.regions.crop_context == [1.0, 1.5]
    coco = load_config("configs/coco.yaml")
    assert coco.teacher.kind == "mask2former" and coco.regions.mode == "mask_pooling"
    assert len(coco.regions.scales) == 2


def test_cli_rejects_bad_config_before_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  max_masks: 0\n")
    code = main(["mine", "--config", str(bad), "--input", str(tmp_path / "nothing.tar"), "--output", str(tmp_path / "o")])
    assert code == 2
    assert "teacher.max_masks" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
