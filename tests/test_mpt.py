"""Mask prompt tuning (OVSeg §3.3) on a tiny random-initialised open_clip ViT built from a config: which patches
are blank, known answers of the prompted forward, only prompts change, loss falls, the prompts reload."""
from __future__ import annotations

import json

import pytest
import torch

from mining.config import RegionsConfig
from mining.regions.clip_loader import load_clip
from mining.regions.masked_crop import masked_crops
from mining.train.clip_trainer import Phase, crop_loss, make_optimizer, trainable_module, train_step
from mining.train.config import build_train_config
from mining.regions.mask_prompts import (MaskPromptedViT, apply_mask_prompts, blank_patches, load_mask_prompts,
                              save_mask_prompts)

CPU = torch.device("cpu")
VIT3 = {"embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 3, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture()
def clip(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ovmine-test-vit3.json").write_text(json.dumps(VIT3))
    torch.manual_seed(1)   # random weights, the same whichever tests ran before
    return load_clip(RegionsConfig(model="ovmine-test-vit3", pretrained=None,
                                   model_config_dir=str(tmp_path / "configs")), CPU)


def normalised_crops(clip, n: int = 8, seed: int = 0) -> torch.Tensor:
    """Masked crops made by mining's masked_crops (mean fill) of random images and discs, normalised."""
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.tensor(clip.mean), torch.tensor(clip.std)
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    crops = []
    for i in range(n):
        image = torch.rand(3, 96, 96, generator=g)
        cy, cx, r = 30 + 4 * i, 40 + 3 * i, 10 + 2 * i
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)[None]
        crops.append(masked_crops(image, mask, 64, fill=mean, context=2.0, fit="pad")[0])
    return (torch.stack(crops) - mean[:, None, None]) / std[:, None, None]


def test_blank_patches_are_the_wholly_filled_ones():
    pixels = torch.zeros(2, 3, 64, 64)
    pixels[0, :, 0:16, 16:32] = 0.5          # patch (0, 1) has content
    pixels[0, 1, 40, 63] = -0.2              # one pixel of patch (2, 3), one channel
    pixels[1] = 1.0                          # nothing blank
    blank = blank_patches(pixels, 16)
    assert blank.shape == (2, 16)
    expected = torch.ones(16, dtype=torch.bool)
    expected[[1, 2 * 4 + 3]] = False
    assert torch.equal(blank[0], expected) and not blank[1].any()
    # the fill of a real masked crop is blank, the mask's patches are not
    image, mask = torch.rand(3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 20:28, 20:28] = True
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    crop = (masked_crops(image, mask, 64, fill=mean, context=4.0)[0] - mean[:, None, None]) / std[:, None, None]
    blank = blank_patches(crop[None], 16)[0].view(4, 4)
    assert not blank[1:3, 1:3].any() and blank[0].all() and blank[3].all()


def test_prompted_forward_known_answers(clip):
    visual = clip.model.visual
    crops = normalised_crops(clip, 4)
    with torch.no_grad():
        plain = visual(crops)
        # zero prompts in the tokenizer layer only: a blank patch's token is already ~0 (conv1 has no bias)
        assert torch.allclose(MaskPromptedViT(visual, depth=1, init_std=0.0)(crops), plain, atol=1e-4)
        # no blank patch: nothing is replaced, whatever the prompts
        full = torch.randn(3, 3, 64, 64)
        assert torch.allclose(MaskPromptedViT(visual, depth=3, init_std=1.0)(full), visual(full), atol=1e-6)
        # blank patches with deep prompts do change the embedding
        assert not torch.allclose(MaskPromptedViT(visual, depth=3, init_std=1.0)(crops), plain, atol=1e-3)
    with pytest.raises(ValueError, match="mpt.depth=4"):
        MaskPromptedViT(visual, depth=4)
    convnext = load_clip(RegionsConfig(model="ovmine-tiny-convnext", pretrained=None), CPU)
    with pytest.raises(ValueError, match="open_clip ViT.*method=ft"):
        MaskPromptedViT(convnext.model.visual)


def test_mpt_changes_only_the_prompts_and_loss_falls(clip):
    model = clip.model
    prompted = MaskPromptedViT(model.visual, depth=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = build_train_config({"steps": 1, "method": "mpt"})
    module = trainable_module(model, Phase("mpt", 0, 30, cfg.mpt.lr, cfg.mpt.weight_decay), prompted)
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["prompts"]
    # distinct class directions: a random text tower's embeddings of four nouns are nearly alike
    text = torch.nn.functional.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    crops, labels = normalised_crops(clip, 8), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    opt = make_optimizer(module, cfg, cfg.mpt.lr, cfg.mpt.weight_decay)
    start = prompted.prompts.detach().clone()
    module.train()
    losses = [train_step(module, [(crops[:4], labels[:4]), (crops[4:], labels[4:])], text, 20.0, opt)
              for _ in range(60)]
    assert losses[-1] < 0.75 * losses[0], losses
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a CLIP weight moved"
    assert not torch.equal(prompted.prompts.detach(), start)
    # the frozen tower alone still gives the loss it gave before training
    with torch.no_grad():
        assert torch.isclose(crop_loss(model.visual, crops, labels, text, 20.0),
                             crop_loss(MaskPromptedViT(model.visual, prompts=torch.zeros_like(start)[:1]), crops,
                                       labels, text, 20.0), atol=1e-4)


def test_prompts_save_and_apply_on_a_reloaded_model(clip, tmp_path):
    prompted = MaskPromptedViT(clip.model.visual, depth=2, init_std=0.5)
    crops = normalised_crops(clip, 3)
    with torch.no_grad():
        expected = prompted(crops)
    save_mask_prompts(prompted.prompts, tmp_path)
    assert torch.equal(load_mask_prompts(f"local-dir:{tmp_path}"), prompted.prompts.detach())
    assert load_mask_prompts(tmp_path / "nothing") is None
    assert apply_mask_prompts(clip.model, tmp_path) and isinstance(clip.model.visual, MaskPromptedViT)
    with torch.no_grad():
        assert torch.allclose(clip.model.encode_image(crops), expected, atol=1e-6)


def test_mining_loads_a_local_dir_with_its_mask_prompts(clip, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "adapted"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": VIT3, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    plain = load_clip(RegionsConfig(model=f"local-dir:{folder}", pretrained=None), CPU)
    assert not isinstance(plain.model.visual, MaskPromptedViT)   # no prompts saved: the plain CLIP
    prompted = MaskPromptedViT(clip.model.visual, depth=2, init_std=0.5)
    save_mask_prompts(prompted.prompts, folder)
    crops = normalised_crops(clip, 3)
    with torch.no_grad():
        expected = prompted(crops)
    mined = load_clip(RegionsConfig(model=f"local-dir:{folder}", pretrained=None), CPU)
    assert isinstance(mined.model.visual, MaskPromptedViT)
    with torch.no_grad():
        assert torch.allclose(mined.model.encode_image(crops), expected, atol=1e-5)
