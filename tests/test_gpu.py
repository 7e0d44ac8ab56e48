"""Mining end to end on CUDA: every teacher and region mode with tiny models, and configs/coco.yaml's real-size
architecture with random weights. Models, masks and embeddings must sit on the GPU, and the GPU's pairs must be
the CPU's (similarities within float tolerance). Marked `gpu`: skipped by default and wherever CUDA is missing;
run them with `bash scripts/test.sh -m gpu` on a GPU machine. OVMINE_TEST_DEVICE=cpu runs the same checks on the
CPU, to try the tests themselves on a machine without a GPU."""
import os

import numpy as np
import pytest
import torch

from mining.config import load_config
from mining.stages import build_stages
from mining.stages.read import read_chunks
from mining.toyworld.make import make_shards

DEVICE = os.environ.get("OVMINE_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")]


def on_device(cfg_overrides: list[str], shards_dir, gpus: float):
    """Build and run the flow's stages on one chunk with the model stages on GPUs (`gpus` > 0) or the CPU;
    returns the mined samples and the devices seen by the teacher's and CLIP's forward outputs."""
    cfg = load_config("configs/tiny.yaml", [*cfg_overrides, "execution.executor=local",
                                            f"execution.teacher.num_gpus={gpus}", f"execution.regions.num_gpus={gpus}",
                                            # the same arithmetic on both: bench/precision.py compares bf16
                                            "execution.teacher.precision=fp32", "execution.regions.precision=fp32"])
    stages = {s.name: s for s in build_stages(cfg)}
    for stage in stages.values():
        stage.prepare()
    seen: dict[str, set[str]] = {"teacher": set(), "clip": set()}

    def record(name):
        def hook(module, args, output):
            tensors = [output] if torch.is_tensor(output) else [v for v in vars(output).values() if torch.is_tensor(v)] \
                if hasattr(output, "__dict__") else []
            seen[name].update(t.device.type for t in tensors)
        return hook

    teacher = stages["teacher"].teacher
    model = getattr(teacher, "model", None) or getattr(getattr(teacher, "generator", None), "model", None)
    if model is not None:
        model.register_forward_hook(record("teacher"))
        assert {p.device.type for p in model.parameters()} == {DEVICE if gpus else "cpu"}
    clip = stages["regions"].clip.model
    for module in clip.visual.modules():   # masked crops call the whole tower, pooling its trunk's parts
        module.register_forward_hook(record("clip"))
    assert {p.device.type for p in clip.parameters()} == {DEVICE if gpus else "cpu"}
    chunk = read_chunks(str(sorted(shards_dir.glob("*.tar"))[0]), None, None)[0]
    for stage in stages.values():
        stage.run(chunk.samples)
    return chunk.samples, seen


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("teacher", ["felzenszwalb", "mask2former", "sam"])
@pytest.mark.parametrize("mode,model", [("masked_crop", "ovmine-tiny-vit"), ("mask_pooling", "ovmine-tiny-convnext")])
def test_tiny_models_mine_on_the_gpu_as_on_the_cpu(tmp_path, tiny_mask2former, tiny_sam, teacher, mode, model):
    make_shards(tmp_path / "in", shards=1, per_shard=3, size=96)
    overrides = [f"teacher.kind={teacher}", "teacher.min_area=4", f"teacher.mask2former.model={tiny_mask2former}",
                 "teacher.mask2former.top_n=6", f"teacher.sam.model={tiny_sam}", "teacher.sam.points_per_side=4",
                 "teacher.sam.pred_iou_thresh=0", "teacher.sam.stability_score_thresh=0", f"regions.mode={mode}",
                 f"regions.model={model}", "source.working_size=96"] + \
                (["regions.crop_context=[1.0]"] if mode == "mask_pooling" else [])
    gpu, seen = on_device(overrides, tmp_path / "in", gpus=1)
    cpu, _ = on_device(overrides, tmp_path / "in", gpus=0)
    assert seen["clip"] == {DEVICE}, "CLIP's embeddings are computed on the device"
    if teacher != "felzenszwalb":   # Felzenszwalb is a CPU algorithm: no model
        assert seen["teacher"] == {DEVICE}, "the teacher's masks are computed on the device"
    assert [s.drop for s in gpu] == [s.drop for s in cpu]
    for g, c in zip(gpu, cpu):
        assert [(p.mask_index, p.entity_index) for p in g.pairs] == [(p.mask_index, p.entity_index) for p in c.pairs]
        np.testing.assert_allclose([p.similarity for p in g.pairs], [p.similarity for p in c.pairs], atol=2e-3)
        from pycocotools import mask as mask_utils
        for rg, rc in zip(g.rles, c.rles):
            assert mask_iou(mask_utils.decode(rg | {"counts": rg["counts"].encode()}),
                            mask_utils.decode(rc | {"counts": rc["counts"].encode()})) > 0.98


def test_real_size_coco_architecture_mines_on_the_gpu(tmp_path):
    """configs/coco.yaml's Mask2Former Swin-L teacher and ConvNeXt-L CLIP pooled at 896 and 1024 px, random
    weights: everything on the device, pairs come out."""
    from real_size import random_mask2former_swin_large

    teacher = random_mask2former_swin_large(tmp_path / "m2f")
    make_shards(tmp_path / "in", shards=1, per_shard=2, size=1024)
    cfg = load_config("configs/coco.yaml", [
        f"teacher.mask2former.model={teacher}", "teacher.mask2former.min_score=0", "regions.pretrained=null",
        "match.min_similarity=null", "match.min_margin=null", "execution.executor=local",
        "execution.teacher.num_gpus=1", "execution.regions.num_gpus=1"])
    stages = build_stages(cfg)
    chunk = read_chunks(str(tmp_path / "in" / "00000.tar"), None, None)[0]
    for stage in stages:
        stage.run(chunk.samples)
    assert {p.device.type for p in stages[2].teacher.model.parameters()} == {DEVICE}
    assert {p.device.type for p in stages[3].clip.model.parameters()} == {DEVICE}
    assert all(s.drop is None for s in chunk.samples), [s.drop_detail for s in chunk.samples]
    assert sum(len(s.pairs) for s in chunk.samples) > 0


def test_real_size_language_models_run_on_the_gpu(tmp_path):
    """The LLM entity parser with a Qwen2.5-0.5B-shaped LM and caption refinement with a LLaVA-style CLIP-L/336 +
    that LM, random weights: both on the device in the checkpoint's bf16, every caption asked and answered (noise:
    each a counted fallback), every image refined."""
    from real_size import random_llava_clip_l_qwen, random_qwen2_5_0_5b

    from mining.config import build_config
    from mining.entities.llm_parser import LLMEntityParser
    from mining.stages.refine import RefineStage
    from mining.toyworld.make import scene_rng
    from mining.toyworld.scene import render_scene
    from mining.records import Sample

    lm, vlm = random_qwen2_5_0_5b(tmp_path / "lm"), random_llava_clip_l_qwen(tmp_path / "vlm")
    gpus = 1 if DEVICE == "cuda" else 0
    cfg = build_config({"entities": {"kind": "llm", "llm": {"model": lm, "max_new_tokens": 32, "cache": False}},
                        "captions": {"refine": {"model": vlm, "max_new_tokens": 16}},
                        "execution": {"executor": "local", "refine": {"num_gpus": gpus, "batch_size": 2}}})
    parser = LLMEntityParser(cfg.entities, cache_dir=tmp_path, device=DEVICE)
    assert {p.device.type for p in parser.backend.model.parameters()} == {DEVICE}
    parser.parse_batch([["A dog on a sofa.", "Two cats."], ["A red ball."]])
    assert sum(parser.fallbacks.values()) == 3 and "backend_error" not in parser.fallbacks
    samples = [Sample(shard="s.tar", shard_stem="s", key=str(i), index=i, captions=["A photo."],
                      image=render_scene(scene_rng(5, 0, i), 336, 0.2, 0.0).image) for i in range(2)]
    stage = RefineStage.from_config(cfg)
    stage.run(samples)
    assert {p.device.type for p in stage.refiner.model.parameters()} == {DEVICE}
    assert all(len(s.captions) == 2 for s in samples), [s.captions for s in samples]


def test_model_a_trains_on_pairs_and_grounding_together_on_the_device():
    """Model A's step with both losses on the device (the images' crops come from their stream on the CPU),
    under bf16 autocast and gradient clipping as a GPU run trains."""
    from mining.config import RegionsConfig
    from mining.devices import resolve_precision
    from mining.regions.clip_loader import load_clip
    from mining.train.clip_trainer import make_optimizer, mixed_loss, text_embeddings, train_step
    from mining.train.config import build_train_config
    from mining.train.grounding import ImageExample, noun_rows

    device = torch.device(DEVICE)
    clip = load_clip(RegionsConfig(model="ovmine-tiny-vit", pretrained=None), device)
    vocabulary = ["circle", "square", "grass"]
    text = text_embeddings(clip, vocabulary, device, "vild")
    visual = clip.model.visual.train()
    opt = make_optimizer(visual, build_train_config({"steps": 1}))
    images = [ImageExample(torch.randn(3, 3, 64, 64), ["circle", "grass"], "s", "a"),
              ImageExample(torch.randn(2, 3, 64, 64), ["square"], "s", "b")]
    words = noun_rows([e.nouns for e in images], {n: i for i, n in enumerate(vocabulary)}, device)
    batch = (torch.randn(4, 3, 64, 64, device=device), torch.tensor([0, 1, 2, 0], device=device), images, words)

    def loss_fn(module, pixels, labels, batch_images, batch_words, text_emb, scale):
        return mixed_loss(module, pixels, labels, batch_images, batch_words, text_emb, scale, 1.0, 1.0)
    loss = train_step(visual, [batch, batch], text, 10.0, opt, loss_fn=loss_fn, grad_clip=1.0,
                      precision=resolve_precision("auto", device))
    assert np.isfinite(loss)
    assert all(p.device.type == device.type for p in visual.parameters())


def test_the_decode_stage_decodes_jpegs_on_the_gpu_as_on_the_host(tmp_path):
    """execution.decode.num_gpus=1: nvJPEG decodes and resizes the batch; frames within a few levels of the
    host's, captions and drops as on the host."""
    make_shards(tmp_path / "in", shards=1, per_shard=6, size=256)
    frames = {}
    for gpus in (0, 1):
        cfg = load_config("configs/tiny.yaml", ["execution.executor=local", f"execution.decode.num_gpus={gpus}",
                                                "source.working_size=128"])
        stage = build_stages(cfg)[0]
        chunk = read_chunks(str(tmp_path / "in" / "00000.tar"), None, None)[0]
        stage.run(chunk.samples)
        frames[gpus] = chunk.samples
        if gpus:
            assert stage.device.type == DEVICE
    for host, device in zip(frames[0], frames[1]):
        assert host.drop is None and device.drop is None and host.captions == device.captions
        assert host.image.shape == device.image.shape == (128, 128, 3)
        assert np.abs(host.image.astype(int) - device.image.astype(int)).mean() < 2.0
