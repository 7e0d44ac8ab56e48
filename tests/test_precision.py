"""Inference precision and device-side work of the model stages, on the CPU: the precision settings resolve and
fail as documented, reduced precision is really used (and kept out of the thresholded heads), the toy world's
pairs at bf16 agree with fp32's, the teacher's on-device preprocessing is the processor's, and compiled stages
embed as uncompiled ones do."""
import numpy as np
import pytest
import torch

from mining.config import ConfigError, load_config
from mining.devices import forward_precision, keep_fp32, resolve_precision
from mining.evaluation.agreement import pair_agreement
from mining.evaluation.run import evaluate
from mining.pipeline import run_mining
from mining.toyworld.demo import demo_config
from mining.toyworld.make import make_world

CPU = torch.device("cpu")


def test_auto_is_bf16_on_cuda_and_fp32_on_the_cpu_and_a_bad_setting_names_its_field():
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("fp16", CPU) == "fp16"
    with pytest.raises(ConfigError, match=r"execution.regions.precision"):
        load_config("configs/tiny.yaml", ["execution.regions.precision=fp8"])
    with pytest.raises(ConfigError, match=r"execution.match.precision"):   # only model stages have one
        load_config("configs/tiny.yaml", ["execution.match.precision=bf16"])


def test_bf16_computes_in_bf16_except_inside_a_module_kept_in_fp32():
    torch.manual_seed(0)
    head, tail = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    with forward_precision(CPU, "bf16"):
        assert head(x).dtype == torch.bfloat16
    keep_fp32(tail)
    with forward_precision(CPU, "bf16"):
        reduced = head(x)
        out = tail(reduced)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, tail(reduced.float()))
    with forward_precision(CPU, "fp32"):
        assert head(x).dtype == torch.float32


def test_the_toy_worlds_pairs_at_bf16_are_fp32s(tmp_path):
    """bench/precision.py measures 98.1% of 212 pairs on 256 images; here a 64-image world must agree at 95%
    with precision and recall within a point."""
    world = make_world(str(tmp_path / "world"), 2, 32, 2026120, progress=False)
    reports = {}
    for precision in ("fp32", "bf16"):
        cfg = demo_config(["execution.executor=local", f"execution.teacher.precision={precision}",
                           f"execution.regions.precision={precision}", "execution.teacher.num_gpus=0",
                           "execution.regions.num_gpus=0"])
        run_mining(cfg, [world["shards_uri"]], str(tmp_path / precision))
        reports[precision] = evaluate(str(tmp_path / precision), world["ground_truth"], progress=False)
    agreement = pair_agreement(str(tmp_path / "fp32"), str(tmp_path / "bf16"))
    assert agreement["reference_pairs"] >= 40
    assert agreement["agreement"] >= 0.95, agreement
    for figure in ("precision", "recall"):
        assert abs(reports["fp32"][figure] - reports["bf16"][figure]) <= 0.01


def test_agreement_counts_a_moved_mask_as_another_pair(tmp_path):
    world = make_world(str(tmp_path / "world"), 1, 8, 3, progress=False)
    cfg = demo_config(["execution.executor=local", "execution.teacher.num_gpus=0", "execution.regions.num_gpus=0",
                       "match.min_similarity=null", "match.min_margin=null"])
    run_mining(cfg, [world["shards_uri"]], str(tmp_path / "a"))
    assert pair_agreement(str(tmp_path / "a"), str(tmp_path / "a"))["agreement"] == 1.0
    run_mining(cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"min_area": 400})}),
               [world["shards_uri"]], str(tmp_path / "b"))
    fewer = pair_agreement(str(tmp_path / "a"), str(tmp_path / "b"))
    assert fewer["other_pairs"] < fewer["reference_pairs"] and fewer["agreement"] < 1.0


def test_the_teachers_preprocessing_on_its_device_is_the_processors(tiny_mask2former):
    from mining.config import Mask2FormerConfig
    from mining.teachers.mask2former import Mask2FormerTeacher

    teacher = Mask2FormerTeacher(Mask2FormerConfig(model=tiny_mask2former), "cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (60, 90, 3), np.uint8), rng.integers(0, 255, (80, 50, 3), np.uint8)]
    ours = teacher.preprocess(images)
    theirs = teacher.processor(images=images, return_tensors="pt")
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"])
    torch.testing.assert_close(ours["pixel_mask"], theirs["pixel_mask"])


def test_a_compiled_region_stage_embeds_as_an_uncompiled_one(monkeypatch):
    from mining.stages.regions import RegionStage
    from conftest import scene

    monkeypatch.setattr("mining.devices.COMPILE_BACKEND", "eager")   # the compile path, without a C++ build
    image = scene(size=64)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:30, 10:30] = masks[1, 30:60, 5:60] = True
    embeddings = {}
    for compile in (False, True):
        cfg = load_config("configs/tiny.yaml", ["execution.regions.num_gpus=0",
                                                f"execution.regions.compile={str(compile).lower()}"])
        stage = RegionStage.from_config(cfg)
        stage.setup()
        assert isinstance(stage.clip.model.visual, torch._dynamo.eval_frame.OptimizedModule) == compile
        embeddings[compile] = stage.region_embeddings(image, masks)
    for plain, compiled in zip(embeddings[False], embeddings[True]):
        np.testing.assert_allclose(compiled, plain, atol=1e-5)


def test_training_names_the_renamed_bf16_switch_and_trains_under_cpu_bf16():
    from mining.config import RegionsConfig
    from mining.regions.clip_loader import load_clip
    from mining.train.clip_trainer import make_optimizer, text_embeddings, train_step
    from mining.train.config import build_train_config

    with pytest.raises(Exception, match=r"bf16 is now precision"):
        build_train_config({"steps": 1, "bf16": True})
    with pytest.raises(Exception, match=r"precision"):
        build_train_config({"steps": 1, "precision": "fp16"})   # would need loss scaling
    clip = load_clip(RegionsConfig(model="ovmine-tiny-vit", pretrained=None), CPU)
    text = text_embeddings(clip, ["circle", "square"], CPU, "single")
    visual = clip.model.visual.train()
    before = [p.detach().clone() for p in visual.parameters()]
    opt = make_optimizer(visual, build_train_config({"steps": 1, "precision": "bf16"}))
    pixels, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    assert np.isfinite(train_step(visual, [(pixels, labels)], text, 10.0, opt, precision="bf16"))
    assert any(not torch.equal(a, b) for a, b in zip(before, visual.parameters()))


@pytest.mark.slow
def test_the_gpu_bench_script_runs_every_step_on_the_cpu(tmp_path):
    """bench/gpu.sh --device cpu --quick (about a minute): every step passes and lands in its one JSON file."""
    import json
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    done = subprocess.run(["bash", "bench/gpu.sh", "--device", "cpu", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env={**__import__("os").environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["failed"] == [] and result["device"] == "cpu"
    assert "passed" in result["tests"]["summary"]
    flops = result["flops"]["result"]
    teacher = flops["teacher"]
    assert 0.9 * teacher["total"] < teacher["backbone"] + teacher["pixel_decoder"] + teacher["query_decoder"] \
        <= teacher["total"]
    stages = result["stages"]["result"]["mining"]
    assert [r["precision"] for r in stages] == ["fp32", "tf32", "bf16", "fp16"]
    assert all(r[s]["images_per_second"] > 0 and 0 < r[s]["model_share"] <= 1 for r in stages
               for s in ("teacher", "regions"))
    assert result["precision"]["result"]["rows"][0]["precision"] == "fp32"
    language = result["language"]["result"]
    assert language["entities"]["captions_per_second"] > 0 and language["refine"]["images_per_second"] > 0


def test_flops_are_counted_and_mfu_divides_by_the_peak():
    import sys

    sys.path.insert(0, "bench")
    import flops

    counted = flops.counted(lambda: torch.nn.Linear(10, 20)(torch.zeros(3, 10)))[0]
    assert counted == 2 * 3 * 10 * 20
    assert flops.mfu(1e12, 989.4 / 2, "H100 SXM") == pytest.approx(0.5)


def test_both_learned_teachers_predict_under_bf16(tiny_mask2former, tiny_sam):
    from conftest import scene
    from mining.config import Mask2FormerConfig, SamConfig
    from mining.teachers.mask2former import Mask2FormerTeacher
    from mining.teachers.sam import SamTeacher

    image = scene(size=64)
    m2f = Mask2FormerTeacher(Mask2FormerConfig(model=tiny_mask2former, min_score=0.0, top_n=4), "cpu", "bf16")
    sam = SamTeacher(SamConfig(model=tiny_sam, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0),
                     "cpu", "bf16")
    for teacher in (m2f, sam):
        masks, scores = teacher.predict([image])[0]
        assert masks.dtype == bool and masks.shape[1:] == (64, 64) and scores.dtype == np.float32
        assert len(masks) == len(scores) > 0


def test_a_training_begun_with_the_bf16_switch_keeps_its_hash():
    """`precision: auto` / `fp32` hash as `bf16: true` / `false` did, so a run begun before the rename resumes;
    bf16 and tf32, new settings, hash apart."""
    import hashlib
    import json
    from dataclasses import asdict

    from mining.train.checkpoints import NOT_HASHED, plan_hash
    from mining.train.clip_trainer import TrainPlan
    from mining.train.config import build_train_config

    def plan(precision):
        cfg = build_train_config({"steps": 1, "precision": precision})
        return TrainPlan(cfg=cfg.resolved(), sources=[], vocabulary=["a"], total_steps=1, regions={}, crop={})

    def before_the_rename(p, bf16):   # the hash as it was computed with `bf16` in the config
        doc = {k: v for k, v in asdict(p).items() if k not in ("scan", "s3")}
        doc["cfg"] = {k: v for k, v in doc["cfg"].items() if k not in NOT_HASHED and k != "precision"} | {"bf16": bf16}
        return hashlib.sha256(json.dumps(["clip", doc], sort_keys=True, default=str).encode()).hexdigest()[:16]

    assert plan_hash("clip", plan("auto")) == before_the_rename(plan("auto"), True)
    assert plan_hash("clip", plan("fp32")) == before_the_rename(plan("fp32"), False)
    assert len({plan_hash("clip", plan(p)) for p in ("auto", "fp32", "bf16", "tf32")}) == 4
