"""A CLIP's class probabilities for masks: each mask's masked crop (mining's own `masked_crops`, so these are
the crops mining embeds) against the ViLD-template text embeddings of the class names, softmax at the model's
logit scale."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mining.config import RegionsConfig
from mining.regions.clip_loader import load_clip
from mining.regions.masked_crop import masked_crops
from mining.regions.text import embedder_for
from mining.storage import S3Options


def clip_regions(spec: str, templates: str = "vild") -> RegionsConfig:
    """The regions config of a CLIP named on the command line: `local-dir:PATH`, `hf-hub:ORG/REPO`, or an
    open_clip name with its pretrained tag as `NAME@TAG` (e.g. ViT-B-16@openai)."""
    if spec.startswith(("local-dir:", "hf-hub:")):
        return RegionsConfig(model=spec, pretrained=None, templates=templates)
    name, _, tag = spec.partition("@")
    return RegionsConfig(model=name, pretrained=tag or None, templates=templates)


def trained_crop(spec: str) -> dict | None:
    """The crop settings an adapted CLIP was trained with (`ovmine train clip` writes them to training.json)."""
    if not spec.startswith("local-dir:"):
        return None
    path = Path(spec.removeprefix("local-dir:")) / "training.json"
    try:
        return json.loads(path.read_text()).get("crop") if path.is_file() else None
    except ValueError:
        return None


class CropClassifier:
    """float[Q, V] probabilities of the V class names for each of Q masks of an image."""

    def __init__(self, regions: RegionsConfig, device: torch.device, crop_context: float = 1.0,
                 crop_fit: str = "pad", batch_size: int = 32, s3: S3Options | None = None) -> None:
        self.clip = load_clip(regions, device, s3)
        self.device = device
        self.context, self.fit, self.batch_size = crop_context, crop_fit, batch_size
        self.mean = torch.tensor(self.clip.mean, device=device)
        self.std = torch.tensor(self.clip.std, device=device)
        self.text = embedder_for(self.clip, device, regions.templates)
        scale = getattr(self.clip.model, "logit_scale", None)
        self.logit_scale = float(scale.detach().exp()) if scale is not None else 100.0

    @classmethod
    def from_spec(cls, spec: str, device: torch.device, crop_context: float | None = None,
                  crop_fit: str | None = None, defaults: RegionsConfig | None = None,
                  s3: S3Options | None = None) -> "CropClassifier":
        """Crop settings: as given, else those the CLIP was adapted with, else `defaults` (a mining config's
        regions), else RegionsConfig's."""
        defaults = defaults or RegionsConfig()
        trained = trained_crop(spec) or {}
        context = crop_context if crop_context is not None else trained.get("context", defaults.crop_context[0])
        fit = crop_fit or trained.get("fit", defaults.crop_fit)
        return cls(clip_regions(spec, defaults.templates), device, float(context), fit, s3=s3)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, masks: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(probs float[Q, V], has_crop bool[Q]) for bool[Q, H, W] masks of the uint8[H, W, 3] image; the row
        of an empty mask (no crop to judge) is 0."""
        masks = masks.to(self.device)
        has_crop = masks.flatten(1).any(1)
        probs = torch.zeros(len(masks), len(names), device=self.device)
        chosen = torch.nonzero(has_crop).flatten()
        if len(chosen) and names:
            pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float() / 255
            text = torch.from_numpy(self.text(names)).to(self.device)
            for start in range(0, len(chosen), self.batch_size):
                rows = chosen[start:start + self.batch_size]
                crops = masked_crops(pixels, masks[rows], self.clip.input_size, fill=self.mean,
                                     context=self.context, fit=self.fit)
                emb = self.clip.model.encode_image((crops - self.mean[:, None, None]) / self.std[:, None, None])
                emb = F.normalize(emb.float(), dim=-1)
                probs[rows] = (self.logit_scale * emb @ text.T).softmax(-1)
        return probs, has_crop
