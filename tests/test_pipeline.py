"""The whole mining path in-process (local executor): bad input is counted, good input is never lost,
and every teacher and region mode runs end to end."""
import numpy as np
import pytest

from conftest import jpeg_bytes, scene, write_tar
from mining.pipeline import run_mining
from mining.records import Drop, Sample
from mining.sinks.reader import iter_records, read_pairs
from mining.config import StageResources
from mining.stages.base import Stage
from mining.toyworld.make import make_shards
from mining.postrun.validate import check_output

GOOD = [f"good{i}" for i in range(3)]


def bad_input_shards(tmp_path):
    img = jpeg_bytes(scene())
    first = write_tar(tmp_path / "in" / "mixed.tar", [
        *[m for i, k in enumerate(GOOD) for m in ((f"{k}.jpg", jpeg_bytes(scene(i))),
                                                  (f"{k}.txt", b"A red square on green grass."))],
        ("corrupt.jpg", img[:200]), ("corrupt.txt", b"a red square"),
        ("zero.jpg", b""), ("zero.txt", b"a red square"),
        ("nocap.jpg", img),
        ("empty.jpg", img), ("empty.txt", b" "),
        ("latin.jpg", img), ("latin.txt", "un caf\u00e9 rouge".encode("latin-1")),
        ("abstract.jpg", img), ("abstract.txt", b"It is a time of love."),
        ("tiny.jpg", jpeg_bytes(np.full((3, 3, 3), 128, np.uint8))), ("tiny.txt", b"a grey dot"),
        ("orphan.txt", b"a caption without its image"),
    ])
    second = make_shards(tmp_path / "src", shards=1, per_shard=4, size=96)[0]
    data = second.read_bytes()
    cut = tmp_path / "in" / "cut.tar"
    cut.write_bytes(data[: data.index(b"000000002.jpg") + 512 + 64])   # inside the third image
    return [str(first), str(cut)]


def test_bad_input_is_counted_and_good_input_kept(tmp_path, tiny_cfg):
    out = tmp_path / "out"
    manifest = run_mining(tiny_cfg(), bad_input_shards(tmp_path), str(out))
    totals = manifest["totals"]
    assert totals["drops"] == {"caption_not_utf8": 1, "decode_error": 1, "empty_image": 1, "missing_image": 1,
                               "no_caption": 2, "no_entities": 1, "no_masks": 1, "truncated_tar": 1}
    assert totals["images_in"] == 11 + 3
    assert totals["images_in"] == totals["images_with_pairs"] + sum(totals["drops"].values())
    keys = {r.key for r in iter_records(str(out))}
    assert set(GOOD) <= keys and {"000000000", "000000001"} <= keys
    cut = next(s for s in manifest["shards"] if s["name"] == "cut")
    assert cut["errors"] and cut["images_in"] == 3
    figures = check_output(str(out))
    assert figures["records"] == totals["images_with_pairs"] == 5


def test_strict_filters_drop_as_no_confident_pair(tmp_path, tiny_cfg):
    shards = make_shards(tmp_path / "in", shards=1, per_shard=3, size=96)
    manifest = run_mining(tiny_cfg(match={"min_similarity": 0.999}), [str(shards[0])], str(tmp_path / "out"))
    assert manifest["totals"]["drops"] == {"no_confident_pair": 3}
    assert manifest["totals"]["pairs"] == 0 and read_pairs(str(tmp_path / "out")).num_rows == 0
    check_output(str(tmp_path / "out"))


def test_limit_takes_the_first_images_in_order(tmp_path, tiny_cfg):
    shards = make_shards(tmp_path / "in", shards=3, per_shard=4, size=96)
    manifest = run_mining(tiny_cfg(), [str(tmp_path / "in")], str(tmp_path / "out"), limit=6)
    assert manifest["totals"]["images_in"] == 6
    assert [s["name"] for s in manifest["shards"]] == ["00000", "00001"]
    assert [s["images_in"] for s in manifest["shards"]] == [4, 2]
    assert len(shards) == 3


class ExplodingStage(Stage):
    name = "explode"

    def process(self, samples):
        for s in samples:
            if s.key == "bad":
                raise RuntimeError("boom")
            s.captions = ["touched"]


def test_one_poisoned_sample_does_not_take_the_batch(tiny_cfg):
    samples = [Sample(shard="x", shard_stem="x", key=k, index=i) for i, k in enumerate(["a", "bad", "c"])]
    ExplodingStage(StageResources(batch_size=3)).run(samples)
    assert [s.drop for s in samples] == [None, Drop.STAGE_ERROR, None]
    assert samples[0].captions == ["touched"] and "boom" in samples[1].drop_detail


@pytest.mark.parametrize("teacher", ["felzenszwalb", "mask2former", "sam"])
@pytest.mark.parametrize("mode,model", [("masked_crop", "ovmine-tiny-vit"), ("mask_pooling", "ovmine-tiny-convnext")])
def test_every_teacher_and_region_mode_mines(tmp_path, tiny_cfg, tiny_mask2former, tiny_sam, teacher, mode, model):
    shards = make_shards(tmp_path / "in", shards=1, per_shard=2, size=96)
    cfg = tiny_cfg(
        teacher={"kind": teacher, "min_area": 4,
                 "mask2former": {"model": tiny_mask2former, "top_n": 6},
                 "sam": {"model": tiny_sam, "points_per_side": 4, "pred_iou_thresh": 0.0,
                         "stability_score_thresh": 0.0}},
        regions={"mode": mode, "model": model},
        execution={"executor": "local", "teacher": {"num_gpus": 0}, "regions": {"num_gpus": 0}},
    )
    manifest = run_mining(cfg, [str(shards[0])], str(tmp_path / "out"))
    assert manifest["totals"]["images_in"] == 2
    assert manifest["totals"]["pairs"] > 0, manifest["totals"]
    assert manifest["models"]["teacher"].startswith(teacher)
    check_output(str(tmp_path / "out"))


class ForgetfulStage(Stage):
    """Says it fills entities, and forgets to for the sample keyed 'b'."""
    name = "forgetful"
    reads = ("captions",)
    fills = ("entities",)

    def process(self, samples):
        from mining.records import Entity

        for s in samples:
            if s.key != "b":
                s.entities = [Entity("cat", "cat", (0, 3), 0)]


def test_a_stage_is_held_to_the_fields_it_declares():
    from mining.stages.base import StageContractError

    def samples(*keys):
        return [Sample(shard="x", shard_stem="x", key=k, index=i, captions=["a cat"]) for i, k in enumerate(keys)]

    stage = ForgetfulStage(StageResources(batch_size=4))
    done = stage.run(samples("a", "c"))
    assert all(s.entities for s in done)
    with pytest.raises(StageContractError, match="stage forgetful fills entities, but sample b left it without"):
        stage.run(samples("a", "b"))
    bare = [Sample(shard="x", shard_stem="x", key="d", index=0)]   # no caption: nothing this stage could read
    with pytest.raises(StageContractError, match="stage forgetful reads captions, but sample d reached it"):
        stage.run(bare)
    gone = samples("e")
    gone[0].drop_with(Drop.NO_CAPTION)   # a dropped sample passes through unchecked
    assert stage.run(gone) == gone


def test_the_flow_fills_every_field_before_a_stage_reads_it(tiny_cfg):
    from mining.stages import build_stages, check_flow
    from mining.stages.base import StageContractError

    stages = build_stages(tiny_cfg())   # checks the shipped flow
    assert [s.name for s in stages] == ["decode", "entities", "teacher", "regions", "match"]
    by_name = {s.name: s for s in stages}
    with pytest.raises(StageContractError, match=r"stage regions reads masks, which no stage before it fills"):
        check_flow([by_name["decode"], by_name["entities"], by_name["regions"], by_name["teacher"]])


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_new_stage_is_one_module_and_one_line(tmp_path, tiny_cfg, monkeypatch, executor, request):
    import re

    import toy_stage
    from mining.sinks.reader import iter_records
    from mining.stages import FLOW

    monkeypatch.setitem(FLOW, "stamp", "toy_stage:StampStage")   # its line, at the end of the flow
    make_shards(tmp_path / "in", shards=1, per_shard=5, size=64)
    execution = {"executor": executor, "stamp": {"batch_size": 2, "num_cpus": 0.25, "concurrency": 1}}
    if executor == "ray":   # join the session's Ray; its workers cannot import a test module: it goes by value
        from ray import cloudpickle

        execution["ray_address"] = request.getfixturevalue("ray_cluster").address
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        cloudpickle.register_pickle_by_value(toy_stage)
        request.addfinalizer(lambda: cloudpickle.unregister_pickle_by_value(toy_stage))
    cfg = tiny_cfg(source={"working_size": 64}, match={"min_similarity": None, "min_margin": None,
                                                        "min_probability": None}, execution=execution)
    assert cfg.execution.resources("stamp").batch_size == 2
    manifest = run_mining(cfg, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert "stamp" in manifest["timings"]
    stamps = [re.search(r"\[stamp batch=(\d) cpu=(\S+)\]$", c) for r in iter_records(str(tmp_path / "out"))
              for c in r.captions]
    assert stamps and all(stamps)
    assert max(int(m.group(1)) for m in stamps) == 2   # its own batch size, from execution.stamp
    assert {m.group(2) for m in stamps} == ({"local"} if executor == "local" else {"0.25"})
    check_output(str(tmp_path / "out"))
