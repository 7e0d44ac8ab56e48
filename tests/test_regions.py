import numpy as np
import pytest
import torch

from conftest import scene
from mining.config import build_config
from mining.regions import RegionStage
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


def test_masked_crop_fills_background_and_keeps_box():
    image = torch.rand(3, 20, 30)
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 5:15, 10:14] = True
    masks[0, 5:7, 10:12] = False       # background inside the box
    assert mask_boxes(masks) == [(10, 5, 14, 15)]
    fill = torch.tensor([0.1, 0.2, 0.3])
    crop = masked_crops(image, masks, out_size=10, source_scale=1.0, fill=fill)
    assert crop.shape == (1, 3, 10, 10)
    # the 4-wide box is padded to a 10-wide square: the left and right columns are pure fill
    torch.testing.assert_close(crop[0, :, :, 0], fill[:, None].expand(3, 10), atol=1e-3, rtol=0)
    # a kept pixel keeps its colour
    torch.testing.assert_close(crop[0, :, 9, 5], image[:, 14, 12], atol=0.15, rtol=0)


def stage_for(mode, model, scales=(64, 96)):
    cfg = build_config({"regions": {"mode": mode, "model": model, "pretrained": None, "scales": list(scales),
                                    "device": "cpu"}})
    stage = RegionStage(cfg)
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
