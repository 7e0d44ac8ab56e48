"""Mask prompt tuning (OVSeg §3.3) for open_clip ViT image towers.

A masked crop's background is CLIP's mean colour, which normalises to exactly 0, so a patch wholly outside
the mask becomes a "zero token" that natural images never produce. MPT replaces those tokens with learnable
ones: T * M + P * (1 - M) on the patch tokens (before the class token and positions are added), and, as deep
prompts, again at the input of transformer blocks 1 .. depth-1. P is per position (float[depth, grid², width]);
CLIP's own weights are untouched.

Which patches are masked out is read from the pixels themselves (every value of the patch within `BLANK_TOL`
of 0 after normalisation). Mining's masked crops and the trainer's are made by the same `masked_crops` with
the mean as fill, so the rule needs no mask beside the crop: `encode_image(crops)` applies the prompts as it
is. Pixels inside a mask never normalise to 0 (the mean is not a uint8 colour: the nearest one is ~0.01
away), so a kept patch is never mistaken for a blank one.

A trained model folder stays a plain open_clip `local-dir:` model (`open_clip_model.safetensors` with the
unprompted tower); the prompts travel beside it in `mask_prompts.safetensors`, which `load_mask_prompts` /
`apply_mask_prompts` put back on a loaded model.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

PROMPTS_FILE = "mask_prompts.safetensors"
BLANK_TOL = 1e-3


def is_prompt_capable(visual: torch.nn.Module) -> str | None:
    """None when `visual` is an open_clip VisionTransformer MPT can prompt, else why not."""
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "patch_dropout")
    missing = [a for a in needed if not hasattr(visual, a)]
    if missing:
        return f"a {type(visual).__name__} image tower, not an open_clip ViT (no {', '.join(missing)})"
    if getattr(visual, "attn_pool", None) is not None:
        return "a ViT with attention pooling (CoCa-style), whose tokens are not prompted here"
    if getattr(visual.patch_dropout, "prob", 0.0) > 0:
        return "a ViT with patch dropout, which drops the very tokens MPT replaces"
    return None


def blank_patches(pixels: torch.Tensor, patch: int, tol: float = BLANK_TOL) -> torch.Tensor:
    """bool[B, grid²]: patches (row-major, as the ViT flattens them) whose every normalised pixel of
    float[B, 3, S, S] is within `tol` of 0, i.e. wholly the crop's mean-colour fill."""
    return F.max_pool2d(pixels.abs().amax(1, keepdim=True), patch, patch).flatten(1) <= tol


class MaskPromptedViT(torch.nn.Module):
    """An open_clip VisionTransformer whose masked-out tokens are replaced by `prompts` (the only parameters
    this module adds). Called like the tower: float[B, 3, S, S] normalised crops -> float[B, D] embeddings."""

    def __init__(self, visual: torch.nn.Module, depth: int = 3, init_std: float = 0.02,
                 prompts: torch.Tensor | None = None) -> None:
        super().__init__()
        why = is_prompt_capable(visual)
        if why is not None:
            raise ValueError(f"mask prompt tuning needs an open_clip ViT image tower; this model has {why}: "
                             f"use method=ft")
        layers = len(visual.transformer.resblocks)
        if prompts is not None:
            depth = prompts.shape[0]
        if not 1 <= depth <= layers:
            raise ValueError(f"mpt.depth={depth}: the tower has {layers} layers; use 1..{layers}")
        self.visual = visual
        self.patch = int(visual.conv1.kernel_size[0])
        grid = visual.positional_embedding.shape[0] - 1
        width = visual.positional_embedding.shape[1]
        if prompts is None:
            prompts = torch.randn(depth, grid, width) * init_std
        if tuple(prompts.shape[1:]) != (grid, width):
            raise ValueError(f"mask prompts of shape {tuple(prompts.shape)} do not fit this tower "
                             f"({grid} patches x {width} wide)")
        param = visual.positional_embedding
        self.prompts = torch.nn.Parameter(prompts.to(param.device, param.dtype).clone())

    @property
    def depth(self) -> int:
        return self.prompts.shape[0]

    def _replace(self, tokens: torch.Tensor, blank: torch.Tensor, layer: int) -> torch.Tensor:
        """tokens float[B, grid², W] with the blank ones (bool[B, grid²]) replaced by prompt `layer`."""
        keep = (~blank)[..., None].to(tokens.dtype)
        return tokens * keep + self.prompts[layer].to(tokens.dtype)[None] * (1 - keep)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.visual
        blank = blank_patches(pixels, self.patch)
        x = v.conv1(pixels).flatten(2).transpose(1, 2)                    # [B, grid², W]
        x = self._replace(x, blank, 0)
        cls = v.class_embedding.to(x.dtype)[None, None].expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.patch_dropout(x)
        x = v.ln_pre(x)
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for i, block in enumerate(v.transformer.resblocks):
            if 0 < i < self.depth:
                if batch_first:
                    x = torch.cat([x[:, :1], self._replace(x[:, 1:], blank, i)], dim=1)
                else:
                    x = torch.cat([x[:1], self._replace(x[1:].transpose(0, 1), blank, i).transpose(0, 1)], dim=0)
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled


def save_mask_prompts(prompts: torch.Tensor, folder: Path) -> Path:
    path = Path(folder) / PROMPTS_FILE
    save_file({"prompts": prompts.detach().to("cpu", torch.float32).contiguous()}, str(path),
              metadata={"ovmine": json.dumps({"method": "mask prompt tuning (OVSeg 3.3)", "blank_tol": BLANK_TOL,
                                              "depth": int(prompts.shape[0])})})
    return path


def load_mask_prompts(folder: str | Path) -> torch.Tensor | None:
    """The prompts saved beside a model folder (a `local-dir:` prefix is allowed), or None if it has none."""
    folder = Path(str(folder).removeprefix("local-dir:"))
    path = folder / PROMPTS_FILE
    return load_file(str(path))["prompts"] if path.is_file() else None


def apply_mask_prompts(model: torch.nn.Module, folder: str | Path) -> bool:
    """Put the prompts saved in `folder` on a loaded open_clip model (its `visual` becomes a MaskPromptedViT,
    so `encode_image` applies them); False when the folder has none. Mining's CLIP loader calls it for every
    `local-dir:` model, so a folder written by `ovmine train clip --set method=mpt` mines with its prompts."""
    prompts = load_mask_prompts(folder)
    if prompts is None:
        return False
    if not isinstance(model.visual, MaskPromptedViT):
        model.visual = MaskPromptedViT(model.visual, prompts=prompts)
    else:
        model.visual.prompts.data.copy_(prompts)
    return True


def strip_mask_prompts(model: torch.nn.Module) -> torch.Tensor | None:
    """Take the prompts off a loaded model (its `visual` the plain tower again) and return them, or None when it
    had none: training starts from the plain tower, whose weights it saves under their own names."""
    if not isinstance(model.visual, MaskPromptedViT):
        return None
    prompts = model.visual.prompts.detach().clone()
    model.visual = model.visual.visual
    return prompts
