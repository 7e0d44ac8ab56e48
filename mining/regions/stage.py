"""The region stage: per scale, an embedding of every mask; and an embedding of every entity.

A scale is a crop context ratio in masked_crop mode (regions.crop_context) and an image size in
mask_pooling mode (regions.scales, by default the working size)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mining.config import RunConfig
from mining.devices import resolve_device
from mining.records import Sample
from mining.regions.clip_loader import LoadedClip, load_clip
from mining.regions.mask_pooling import DenseMaskPooler
from mining.regions.masked_crop import masked_crops
from mining.regions.text import SINGLE_TEMPLATE, VILD_TEMPLATES, TextEmbedder
from mining.stage import Stage
from mining.storage import S3Options


class RegionStage(Stage):
    name = "regions"

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.clip: LoadedClip | None = None

    def setup(self) -> None:
        rc = self.cfg.regions
        self.device = resolve_device(rc.device)
        s3 = S3Options.from_source(self.cfg.source)
        self.clip = load_clip(rc, self.device, s3)
        self.mean = torch.tensor(self.clip.mean, device=self.device)
        self.std = torch.tensor(self.clip.std, device=self.device)
        self.pooler = DenseMaskPooler(self.clip.model.visual, rc.model) if rc.mode == "mask_pooling" else None
        templates = VILD_TEMPLATES if rc.templates == "vild" else SINGLE_TEMPLATE
        self.text = TextEmbedder(self.clip.model, self.clip.tokenizer, self.device, templates)
        # CLIP classifies with softmax(logit_scale * cosine); the match probability uses the same scale
        scale = getattr(self.clip.model, "logit_scale", None)
        self.logit_scale = float(scale.detach().exp()) if scale is not None else 100.0

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean[:, None, None]) / self.std[:, None, None]

    def scales(self) -> list[float]:
        """What one embedding per mask is taken at: context ratios of the box (masked_crop), or image sizes,
        longest side in pixels (mask_pooling; by default the working frame's size)."""
        rc = self.cfg.regions
        if rc.mode == "masked_crop":
            return list(rc.crop_context)
        return list(rc.scales or [self.cfg.source.working_size])

    def _crop_embeddings(self, image: torch.Tensor, masks: torch.Tensor, context: float) -> torch.Tensor:
        """float[N, D] embeddings of crops of the working frame's own pixels, resized once to CLIP's input."""
        rc = self.cfg.regions
        out = []
        for start in range(0, len(masks), rc.batch_size):
            crops = masked_crops(image, masks[start:start + rc.batch_size], self.clip.input_size, fill=self.mean,
                                 context=context, fit=rc.crop_fit)
            out.append(self.clip.model.encode_image(self._normalise(crops)))
        return torch.cat(out)

    def _pooled_embeddings(self, image: torch.Tensor, masks: torch.Tensor, scale: int) -> torch.Tensor:
        """float[N, D] embeddings pooled from one CLIP pass over the image at longest side ~`scale`."""
        size = self.pooler.pooled_size(*image.shape[1:], scale)
        pixels = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)
        features = self.pooler.feature_map(self._normalise(pixels[0])[None])
        return self.pooler.embed(features, masks)

    @torch.inference_mode()
    def region_embeddings(self, image: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        """Per scale (see `scales`), float32[N, D] L2-normalised embeddings of the bool[N, H, W] masks of the
        uint8[H, W, 3] image; the matcher averages its cost over this list."""
        pixels = torch.from_numpy(image).to(self.device).permute(2, 0, 1).float() / 255.0
        mask_t = torch.from_numpy(masks).to(self.device)
        embed = self._pooled_embeddings if self.pooler is not None else self._crop_embeddings
        return [F.normalize(embed(pixels, mask_t, s).float(), dim=-1).cpu().numpy() for s in self.scales()]

    def process(self, samples: list[Sample]) -> None:
        for sample in samples:
            sample.region_embeddings = self.region_embeddings(sample.image, sample.masks)
            sample.entity_embeddings = self.text([e.noun for e in sample.entities])
            sample.logit_scale = self.logit_scale
