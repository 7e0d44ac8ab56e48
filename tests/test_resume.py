"""Reruns skip what is committed and finish the rest; the final output equals an uninterrupted run."""
import json
import shutil

import pytest

from mining.pipeline import run_mining
from mining.sinks.commits import OutputConflict
from mining.toyworld.make import make_shards
from mining.postrun.validate import check_output
from same_output import assert_same_output, differences


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from conftest import tiny_config

    root = tmp_path_factory.mktemp("resume")
    make_shards(root / "in", shards=3, per_shard=4, size=96)
    run_mining(tiny_config(), [str(root / "in")], str(root / "full"))
    return root


def test_rerun_finishes_an_interrupted_run(reference, tiny_cfg, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference / "full", out)
    # as if killed after 00000 committed and while 00001 was being written: 00001 has a tar, no marker
    (out / "_done" / "00001.json").unlink()
    (out / "_done" / "00002.json").unlink()
    (out / "shards" / "00002.tar").unlink()
    (out / "manifest.json").unlink()
    mined = []
    manifest = run_mining(tiny_cfg(), [str(reference / "in")], str(out), on_shard=lambda m: mined.append(m["name"]))
    assert sorted(mined) == ["00001", "00002"], "committed shards are not mined again"
    assert_same_output(str(out), str(reference / "full"))
    assert manifest["totals"] == json.loads((reference / "full" / "manifest.json").read_text())["totals"]
    check_output(str(out))
    again = []
    run_mining(tiny_cfg(), [str(reference / "in")], str(out), on_shard=lambda m: again.append(m["name"]))
    assert again == []


def test_other_config_is_refused_unless_overwrite(reference, tiny_cfg, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference / "full", out)
    other = tiny_cfg(match={"min_similarity": 0.5})
    with pytest.raises(OutputConflict, match="--overwrite"):
        run_mining(other, [str(reference / "in")], str(out))
    mined = []
    manifest = run_mining(other, [str(reference / "in")], str(out), overwrite=True,
                          on_shard=lambda m: mined.append(m["name"]))
    assert sorted(mined) == ["00000", "00001", "00002"]
    assert manifest["config_hash"] == other.config_hash()
    check_output(str(out))


def test_limited_shard_is_completed_by_a_full_rerun(reference, tiny_cfg, tmp_path):
    out = str(tmp_path / "out")
    run_mining(tiny_cfg(), [str(reference / "in")], out, limit=6)
    mined = []
    manifest = run_mining(tiny_cfg(), [str(reference / "in")], out, on_shard=lambda m: mined.append(m["name"]))
    assert sorted(mined) == ["00001", "00002"], "00000 was complete; 00001 was cut at 2 images"
    assert manifest["totals"]["images_in"] == 12
    assert_same_output(out, str(reference / "full"))


def test_same_output_tolerates_float_noise_only():
    record = {"key": "k", "pairs": [{"mask_index": 1, "similarity": 0.30000001, "margin": 0.04438704}]}
    assert differences(record, {"key": "k", "pairs": [{"mask_index": 1, "similarity": 0.3, "margin": 0.04438701}]}) == []
    assert differences(record, {"key": "k", "pairs": [{"mask_index": 2, "similarity": 0.3, "margin": 0.04438701}]})
    assert differences(record, {"key": "k", "pairs": [{"mask_index": 1, "similarity": 0.301, "margin": 0.04438701}]})
    assert differences(record, {"key": "k", "pairs": [{"mask_index": 1, "similarity": 0.3, "margin": None}]})
    assert differences(record, {"key": "k", "pairs": []})


def test_overwrite_of_a_subset_never_leaves_two_configs(reference, tiny_cfg, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference / "full", out)
    other = tiny_cfg(match={"min_similarity": 0.5})
    with pytest.raises(OutputConflict, match="would not mine again"):
        run_mining(other, [str(reference / "in" / "00000.tar")], str(out), overwrite=True)
    assert json.loads((out / "_done" / "00000.json").read_text())["config_hash"] == tiny_cfg().config_hash()
