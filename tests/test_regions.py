import numpy as np
import pytest
import torch

from conftest import scene
from mining.config import ConfigError, build_config
from mining.stages.regions import RegionStage
from mining.regions.mask_pooling import mask_weights, pool_features
from mining.regions.masked_crop import mask_boxes, masked_crops


def test_pool_features_is_the_masked_average():
    features = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    masks = torch.zeros(2, 3, 4, dtype=torch.bool)
    masks[0, 0, :2] = True            # cells (0,0) (0,1)
    masks[1, 1:, 3] = True            # cells (1,3) (2,3)
    pooled = pool_features(features, mask_weights(masks, (3, 4)))
    expected0 = features[:, 0, :2].mean(1)
    expected1 = features[:, 1:, 3].mean(1)
    torch.testing.assert_close(pooled, torch.stack([expected0, expected1]))


def test_mask_weights_are_cell_coverage():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True             # a quarter of the top-left 2x2 cell
    w = mask_weights(masks, (2, 2))
    torch.testing.assert_close(w, torch.tensor([[[0.25, 0.0], [0.0, 0.0]]]))


def test_mask_boxes_are_each_masks_tight_box():
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((6, 17, 23)) > 0.97)
    masks[0] = False
    masks[0, 16, 22] = True                                   # the bottom-right pixel alone
    masks[1] = True                                           # the whole frame
    masks = masks[masks.flatten(1).any(1)]
    expected = []
    for m in masks.numpy():
        ys, xs = np.nonzero(m)
        expected.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    assert mask_boxes(masks) == expected and expected[:2] == [(22, 16, 23, 17), (0, 0, 23, 17)]
    assert mask_boxes(masks[:0]) == []


def test_masked_crop_fills_background_and_keeps_box():
    image = torch.rand(3, 20, 30)
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 5:15, 10:14] = True
    masks[0, 5:7, 10:12] = False       # background inside the box
    assert mask_boxes(masks) == [(10, 5, 14, 15)]
    fill = torch.tensor([0.1, 0.2, 0.3])
    crop = masked_crops(image, masks, out_size=10, fill=fill)
    assert crop.shape == (1, 3, 10, 10)
    # the 4-wide box is padded to a 10-wide square: the left and right columns are pure fill
    torch.testing.assert_close(crop[0, :, :, 0], fill[:, None].expand(3, 10), atol=1e-3, rtol=0)
    # a kept pixel keeps its colour
    torch.testing.assert_close(crop[0, :, 9, 5], image[:, 14, 12], atol=0.15, rtol=0)


def stage_for(mode, model, scales=(64, 96)):
    """Two scales: image sizes in pooling mode, context ratios of the box in crop mode."""
    multi = {"scales": list(scales)} if mode == "mask_pooling" else {"crop_context": [1.0, 1.5][:len(scales)]}
    cfg = build_config({"regions": {"mode": mode, "model": model, "pretrained": None, **multi}})
    stage = RegionStage.from_config(cfg)
    stage.setup()
    return stage


@pytest.mark.parametrize("mode,model", [("masked_crop", "ovmine-tiny-vit"), ("mask_pooling", "ovmine-tiny-convnext")])
def test_region_embeddings_per_scale(mode, model):
    stage = stage_for(mode, model)
    image = scene(size=80)
    masks = np.zeros((3, 80, 80), bool)
    masks[0] = True
    masks[1, 20:40, 20:40] = True
    masks[2, 60:, :10] = True
    embeddings = stage.region_embeddings(image, masks)
    assert len(embeddings) == 2
    for e in embeddings:
        assert e.shape == (3, 32)
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[1]), "scales see different pixels"


def test_full_mask_pooling_equals_the_image_embedding():
    stage = stage_for("mask_pooling", "ovmine-tiny-convnext", scales=[64])
    image = scene(size=64)
    full = stage.region_embeddings(image, np.ones((1, 64, 64), bool))[0][0]
    with torch.no_grad():
        pixels = stage._normalise(torch.from_numpy(image).permute(2, 0, 1).float() / 255)[None]
        direct = torch.nn.functional.normalize(stage.clip.model.encode_image(pixels), dim=-1)[0].numpy()
    np.testing.assert_allclose(full, direct, atol=1e-5)


def test_text_embeddings_average_templates_and_cache():
    stage = stage_for("masked_crop", "ovmine-tiny-vit")
    calls = []
    original = stage.text._encode
    stage.text._encode = lambda nouns: calls.append(list(nouns)) or original(nouns)
    first = stage.text(["dog", "cat", "dog"])
    second = stage.text(["cat", "bird"])
    assert calls == [["dog", "cat"], ["bird"]]
    np.testing.assert_allclose(first[0], first[2])
    np.testing.assert_allclose(first[1], second[0])
    model, tok = stage.clip.model, stage.clip.tokenizer
    with torch.no_grad():
        per_template = torch.nn.functional.normalize(
            model.encode_text(tok([t.format("dog") for t in stage.text.templates])), dim=-1)
        expected = torch.nn.functional.normalize(per_template.mean(0), dim=-1).numpy()
    assert len(stage.text.templates) == 14
    np.testing.assert_allclose(first[0], expected, atol=1e-5)


def test_random_init_is_reproducible_across_workers():
    a = stage_for("masked_crop", "ovmine-tiny-vit").text(["dog"])
    b = stage_for("masked_crop", "ovmine-tiny-vit").text(["dog"])
    np.testing.assert_array_equal(a, b)


def test_clip_loads_a_local_safetensors_checkpoint(tmp_path):
    from safetensors.torch import save_file

    from mining.regions.clip_loader import load_clip

    source = stage_for("masked_crop", "ovmine-tiny-vit")
    with torch.no_grad():
        for p in source.clip.model.parameters():
            p.add_(0.01)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.clip.model.state_dict().items()}, str(path))
    cfg = build_config({"regions": {"model": "ovmine-tiny-vit", "pretrained": str(path)}})
    loaded = load_clip(cfg.regions, torch.device("cpu"))
    for (name, p), q in zip(source.clip.model.state_dict().items(), loaded.model.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


# --- masked crops: one resize from the working frame; context ratios; fit (defect 8) ---------------------

def crop_config(**regions):
    return build_config({"regions": {"mode": "masked_crop", "model": "ovmine-tiny-vit", "pretrained": None,
                                     **regions}, "execution": {"regions": {"num_gpus": 0}}})


def capture_encoded(stage):
    """Record the (normalised) pixels every CLIP image forward pass sees."""
    seen = []
    encode = stage.clip.model.encode_image
    stage.clip.model.encode_image = lambda pixels: seen.append(pixels.clone()) or encode(pixels)
    return seen


def test_crops_take_the_working_frame_pixels_with_one_resize():
    # a 64x64 box (the tiny CLIP's input) in a 256-px working frame: the crop must be those very pixels,
    # not a copy shrunk to some "scale" and blown up again
    stage = RegionStage.from_config(crop_config())
    stage.setup()
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    masks = np.zeros((1, 256, 256), bool)
    masks[0, 32:96, 100:164] = True
    seen = capture_encoded(stage)
    stage.region_embeddings(image, masks)
    assert len(seen) == 1 and seen[0].shape == (1, 3, 64, 64)
    expected = stage._normalise(torch.from_numpy(image[32:96, 100:164]).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(seen[0][0], expected, atol=1e-5, rtol=0)


def test_crop_context_grows_the_box_about_its_centre():
    image = torch.rand(3, 40, 40)
    fill = torch.tensor([0.1, 0.2, 0.3])
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[0, 10:20, 15:25] = True       # inside the image
    masks[1, 0:10, 30:40] = True        # in a corner: the grown box reaches past the image
    crops = masked_crops(image, masks, out_size=20, fill=fill, context=2.0)
    assert crops.shape == (2, 3, 20, 20)
    # the 10-px box is the centre 10 px of a 20-px crop: one resize at scale 1, so exact pixels
    torch.testing.assert_close(crops[0, :, 5:15, 5:15], image[:, 10:20, 15:25])
    torch.testing.assert_close(crops[1, :, 5:15, 5:15], image[:, 0:10, 30:40])
    ring = torch.ones(20, 20, dtype=torch.bool)
    ring[5:15, 5:15] = False
    for crop in crops:
        torch.testing.assert_close(crop[:, ring], fill[:, None].expand(3, int(ring.sum())))
    # context 1 is the tight box itself
    torch.testing.assert_close(masked_crops(image, masks[:1], out_size=10, fill=fill)[0], image[:, 10:20, 15:25])


def test_crop_fit_stretch_ignores_the_aspect_ratio():
    image = torch.rand(3, 20, 30)
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 5:15, 10:15] = True        # 10 tall, 5 wide
    fill = torch.tensor([0.1, 0.2, 0.3])
    crop = masked_crops(image, masks, out_size=10, fill=fill, fit="stretch")[0]
    expected = torch.nn.functional.interpolate(image[None, :, 5:15, 10:15], size=(10, 10), mode="bicubic",
                                               antialias=True, align_corners=False)[0].clamp(0, 1)
    torch.testing.assert_close(crop, expected)
    with pytest.raises(ValueError, match="context"):
        masked_crops(image, masks, out_size=10, fill=fill, context=0.5)


def test_each_crop_context_is_one_scale():
    stage = RegionStage.from_config(crop_config(crop_context=[1.0, 2.0], crop_fit="stretch"))
    stage.setup()
    image = scene(size=96)
    masks = np.zeros((2, 96, 96), bool)
    masks[0, 24:48, 24:48] = True
    masks[1, 60:90, 10:40] = True
    seen = capture_encoded(stage)
    embeddings = stage.region_embeddings(image, masks)
    assert len(embeddings) == 2 and len(seen) == 2
    assert not np.allclose(embeddings[0], embeddings[1])
    # at context 2 the 24-px mask fills the centre half of the crop, the rest is the fill (mean) colour
    assert seen[1][0, :, :12, :].abs().max() < 1e-4, "normalised mean colour is 0"
    assert seen[1][0, :, 20:44, 20:44].abs().min() > 0


def test_crop_mode_rejects_scales_and_pooling_rejects_crop_settings():
    with pytest.raises(ConfigError) as err:
        build_config({"regions": {"mode": "masked_crop", "scales": [224, 336]}})
    assert "regions.scales" in str(err.value) and "regions.crop_context" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"regions": {"crop_context": [0.5]}})
    assert "regions.crop_context" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"regions": {"mode": "mask_pooling", "model": "convnext_base", "crop_context": [1.0, 1.5]}})
    assert "regions.crop_context" in str(err.value) and "regions.scales" in str(err.value)
    # crop_fit changes no count of scales: pooling ignores it, so a crop config switches mode with one override
    assert build_config({"regions": {"mode": "mask_pooling", "model": "convnext_base", "crop_fit": "stretch"}})
    with pytest.raises(ConfigError) as err:
        build_config({"regions": {"mode": "mask_pooling", "model": "convnext_base", "scales": []}})
    assert "regions.scales" in str(err.value)
    cfg = build_config({"regions": {"mode": "masked_crop", "crop_context": [1.0, 1.5]}})
    assert cfg.regions.scales is None and cfg.regions.crop_fit == "pad"


def test_pooling_scales_default_to_the_working_size():
    cfg = build_config({"source": {"working_size": 64},
                        "regions": {"mode": "mask_pooling", "model": "ovmine-tiny-convnext", "pretrained": None}})
    stage = RegionStage.from_config(cfg)
    stage.setup()
    sizes = []
    feature_map = stage.pooler.feature_map
    stage.pooler.feature_map = lambda pixels: sizes.append(tuple(pixels.shape[-2:])) or feature_map(pixels)
    embeddings = stage.region_embeddings(scene(size=64), np.ones((1, 64, 64), bool))
    assert len(embeddings) == 1 and sizes == [(64, 64)]


# --- mask pooling: refuse towers without a spatial map; stride-aligned grid (defect 9) -------------------

def local_dir_clip(tmp_path, vision_cfg) -> str:
    """An open_clip local-dir model (config only: open_clip builds it with random weights)."""
    import json

    cfg = {"model_cfg": {"embed_dim": 32, "vision_cfg": vision_cfg,
                         "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2,
                                      "layers": 1}}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    return f"local-dir:{tmp_path}"


@pytest.mark.parametrize("vision_cfg", [
    {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear",
     "image_size": 160},                                                  # a timm ViT
    {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},  # open_clip's own ViT
], ids=["timm-vit", "open_clip-vit"])
def test_mask_pooling_refuses_a_vit_at_setup(tmp_path, vision_cfg):
    model = local_dir_clip(tmp_path, vision_cfg)
    cfg = build_config({"regions": {"mode": "mask_pooling", "model": model, "pretrained": None}})
    with pytest.raises(ValueError) as err:
        RegionStage.from_config(cfg).setup()
    assert "regions.mode=mask_pooling" in str(err.value) and "regions.model" in str(err.value)


def test_mask_pooling_refuses_a_timm_swin():
    import open_clip.timm_model
    from timm.models.swin_transformer import SwinTransformer

    from mining.regions.mask_pooling import DenseMaskPooler

    visual = open_clip.timm_model.TimmModel("test_convnext", embed_dim=32)
    visual.trunk = SwinTransformer(img_size=64, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1),
                                   num_heads=(1, 1), num_classes=0, strict_img_size=False)  # NHWC features
    with pytest.raises(ValueError, match="regions.mode=mask_pooling"):
        DenseMaskPooler(visual)


def test_pooled_size_is_a_multiple_of_the_stride_so_masks_align():
    # 120 px is not a multiple of convnext's stride 32: unrounded, the trunk's 3x3 grid covers only 96 px of
    # the frame while the masks are spread over all 120, so a half-image mask straddles a column
    stage = stage_for("mask_pooling", "ovmine-tiny-convnext", scales=[120])
    seen = []
    embed = stage.pooler.embed
    stage.pooler.embed = lambda features, masks: seen.append((features, masks)) or embed(features, masks)
    masks = np.zeros((1, 120, 120), bool)
    masks[0, :, :60] = True
    stage.region_embeddings(scene(size=120), masks)
    features, mask_t = seen[0]
    assert tuple(features.shape[-2:]) == (4, 4), "128 px (120 rounded to the stride) -> a 4x4 grid"
    weights = mask_weights(mask_t, tuple(features.shape[-2:]))
    expected = torch.zeros(1, 4, 4)
    expected[0, :, :2] = 1.0
    torch.testing.assert_close(weights, expected)
    assert stage.pooler.stride == 32


def test_region_stage_hands_the_models_logit_scale_to_matching(tiny_cfg):
    import math

    from mining.stages.regions import RegionStage
    from mining.records import Entity, Sample

    stage = RegionStage.from_config(tiny_cfg())
    stage.setup()
    sample = Sample(shard="s", shard_stem="s", key="k", index=0, image=np.zeros((32, 32, 3), np.uint8),
                    masks=np.ones((1, 32, 32), bool), entities=[Entity("dog", "dog", (0, 3), 0)])
    stage.process([sample])
    assert sample.logit_scale == pytest.approx(math.exp(stage.clip.model.logit_scale.item()))
    assert sample.logit_scale != 100.0   # a random tiny model starts at CLIP's init, 1/0.07


def test_masked_crops_of_a_batch_of_images_embed_as_each_alone():
    # execution.regions.batch_size images share one CLIP forward pass: the result must not depend on it
    stage = RegionStage.from_config(crop_config(crop_context=[1.0, 1.5]))
    stage.setup()
    images = [scene(seed, size=96) for seed in range(3)]
    masks = []
    for n in (1, 3, 2):   # a different number of masks per image
        m = np.zeros((n, 96, 96), bool)
        for i in range(n):
            m[i, 10 * i:10 * i + 30, 5 + 20 * i:40 + 20 * i] = True
        masks.append(m)
    batched = stage.batch_region_embeddings(images, masks)
    for image, m, together in zip(images, masks, batched):
        alone = stage.region_embeddings(image, m)
        assert [e.shape for e in together] == [(len(m), alone[0].shape[1])] * 2
        for a, b in zip(together, alone):
            np.testing.assert_allclose(a, b, atol=1e-5)
