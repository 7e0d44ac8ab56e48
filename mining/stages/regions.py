"""Regions: per scale, an embedding of every mask; and an embedding of every entity.

A scale is a crop context ratio in masked_crop mode (regions.crop_context) and an image size in
mask_pooling mode (regions.scales, by default the working size). Masked crops of `execution.regions.batch_size`
images go through CLIP in one forward pass; the device follows `execution.regions.num_gpus`, the arithmetic
`execution.regions.precision` (entity text stays fp32: its embeddings are cached across runs)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mining.config import ModelStageResources, RegionsConfig, RunConfig
from mining.devices import compiled, forward_precision, resolve_precision, stage_device, to_device
from mining.records import Sample
from mining.regions.clip_loader import LoadedClip, load_clip
from mining.regions.mask_pooling import DenseMaskPooler
from mining.regions.masked_crop import masked_crops
from mining.regions.text import embedder_for
from mining.stages.base import Stage
from mining.storage import S3Options


class RegionStage(Stage):
    name = "regions"
    reads = ("image", "masks", "entities")
    fills = ("region_embeddings", "entity_embeddings")

    def __init__(self, regions: RegionsConfig, resources: ModelStageResources, working_size: int,
                 s3: S3Options | None = None) -> None:
        """`working_size`: the working frame's longest side (mask pooling's default scale); `s3`: where an
        s3:// checkpoint is read from."""
        super().__init__(resources)
        self.settings, self.working_size, self.s3 = regions, working_size, s3
        self.clip: LoadedClip | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "RegionStage":
        return cls(cfg.regions, cfg.execution.regions, cfg.source.working_size, S3Options.from_config(cfg.storage))

    def setup(self) -> None:
        rc = self.settings
        self.device = stage_device(self.resources.num_gpus)
        self.precision = resolve_precision(self.resources.precision, self.device)
        self.clip = load_clip(rc, self.device, self.s3)
        self.mean = torch.tensor(self.clip.mean, device=self.device)
        self.std = torch.tensor(self.clip.std, device=self.device)
        self.pooler = DenseMaskPooler(self.clip.model.visual, rc.model) if rc.mode == "mask_pooling" else None
        if self.resources.compile:   # what each mode runs per batch: the pooled trunk, or the whole tower
            if self.pooler is not None:
                self.pooler.forward_features = compiled(self.pooler.forward_features, True)
            else:
                self.clip.model.visual = compiled(self.clip.model.visual, True)
        self.text = embedder_for(self.clip, self.device, rc.templates, persist=False)
        # CLIP classifies with softmax(logit_scale * cosine); the match probability uses the same scale
        scale = getattr(self.clip.model, "logit_scale", None)
        self.logit_scale = float(scale.detach().exp()) if scale is not None else 100.0

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean[:, None, None]) / self.std[:, None, None]

    def scales(self) -> list[float]:
        """What one embedding per mask is taken at: context ratios of the box (masked_crop), or image sizes,
        longest side in pixels (mask_pooling; by default the working frame's size)."""
        rc = self.settings
        if rc.mode == "masked_crop":
            return list(rc.crop_context)
        return list(rc.scales or [self.working_size])

    def _crop_embeddings(self, images: list[torch.Tensor], masks: list[torch.Tensor],
                         context: float) -> list[torch.Tensor]:
        """Per image, float[N, D] embeddings of crops of the working frame's own pixels, resized once to CLIP's
        input; the crops of all the images go through CLIP in one forward pass."""
        crops = [masked_crops(image, m, self.clip.input_size, fill=self.mean, context=context,
                              fit=self.settings.crop_fit) for image, m in zip(images, masks)]
        embedded = self.clip.model.encode_image(self._normalise(torch.cat(crops)))
        return list(embedded.split([len(m) for m in masks]))

    def _pooled_embeddings(self, image: torch.Tensor, masks: torch.Tensor, scale: int) -> torch.Tensor:
        """float[N, D] embeddings pooled from one CLIP pass over the image at longest side ~`scale`."""
        size = self.pooler.pooled_size(*image.shape[1:], scale)
        pixels = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)
        features = self.pooler.feature_map(self._normalise(pixels[0])[None])
        return self.pooler.embed(features, masks)

    @torch.inference_mode()
    def batch_region_embeddings(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Per image, per scale (see `scales`), float32[N, D] L2-normalised embeddings of the bool[N, H, W]
        masks of the uint8[H, W, 3] image; the matcher averages its cost over the scales."""
        pixels = [to_device(image, self.device).permute(2, 0, 1).float() / 255.0 for image in images]
        mask_t = [to_device(m, self.device) for m in masks]
        per_scale = []
        for scale in self.scales():
            with forward_precision(self.device, self.precision):
                if self.pooler is not None:
                    embedded = [self._pooled_embeddings(p, m, scale) for p, m in zip(pixels, mask_t)]
                else:
                    embedded = self._crop_embeddings(pixels, mask_t, scale)
            per_scale.append([F.normalize(e.float(), dim=-1).cpu().numpy() for e in embedded])
        return [list(scales) for scales in zip(*per_scale)]

    def region_embeddings(self, image: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        """One image's embeddings per scale (see `batch_region_embeddings`)."""
        return self.batch_region_embeddings([image], [masks])[0]

    def process(self, samples: list[Sample]) -> None:
        embedded = self.batch_region_embeddings([s.image for s in samples], [s.masks for s in samples])
        for sample, regions in zip(samples, embedded):
            sample.region_embeddings = regions
            sample.entity_embeddings = self.text([e.noun for e in sample.entities])
            sample.logit_scale = self.logit_scale
