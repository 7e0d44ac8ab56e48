"""From an image and class names to a semantic label map, Mask2Former's way: each query has class
probabilities p[Q, V] and a soft mask m[Q, H, W]; a pixel takes argmax_c Σ_q p[q, c] · m[q, h, w].

Two sources of queries and probabilities, the four variants of the trainer's aim 3:
- `SegmenterPredictor`: the trained open-vocabulary segmenter (Model B); optionally its p ensembled with a
  CLIP's masked-crop probabilities (OVSeg A.5, `mining.segmentation.ensemble`).
- `TeacherClipPredictor`: the mining teacher's queries (those mining keeps: top_n by 1 - p(no object), at
  least min_score), classified by a CLIP's masked crops alone, weighted by the query's object score: OVSeg's
  unadapted baseline when the CLIP is the shipped one, or with an adapted CLIP.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mining.config import Mask2FormerConfig, RegionsConfig
from mining.regions.clip_loader import fetch_s3_folder, load_clip
from mining.segmentation.clip_scores import CropClassifier
from mining.segmentation.ensemble import geometric_ensemble
from mining.train.clip_trainer import text_embeddings
from mining.storage import Location, S3Options, is_s3
from mining.train.segmenter import META_FILE, load_mask2former, load_segmenter
from mining.train.segmenter_trainer import valid_size

NONE = -1   # a pixel no query claims (no queries at all)


@dataclass
class Prediction:
    labels: np.ndarray                # int32[H, W]: class index into the names, NONE where nothing
    segments: list[dict[str, Any]]    # per class present: id, class, score, area


def query_mask_probs(logits: torch.Tensor, padded: tuple[int, int], valid: tuple[int, int],
                     size: tuple[int, int]) -> torch.Tensor:
    """float[Q, H, W] probabilities in the image's frame from float[Q, h, w] logits at 1/4 of the padded input:
    upsampled to the padded input, cut to the valid (unpadded) area, then resized to the image."""
    m = F.interpolate(logits[None].float(), size=padded, mode="bilinear", align_corners=False)
    m = F.interpolate(m[:, :, :valid[0], :valid[1]], size=size, mode="bilinear", align_corners=False)[0]
    return m.sigmoid()


def semantic_prediction(probs: torch.Tensor, masks: torch.Tensor, names: list[str]) -> Prediction:
    """probs float[Q, V], masks float[Q, H, W] -> the label map and one segment per class present. A segment's
    score is the mean, over its pixels, of its class's share of the pixel's total score."""
    h, w = masks.shape[-2:]
    if len(probs) == 0 or not names:
        return Prediction(np.full((h, w), NONE, np.int32), [])
    scores = torch.einsum("qc,qhw->chw", probs.float(), masks.float())
    best, labels = scores.max(0)
    share = best / scores.sum(0).clamp_min(1e-12)
    labels_np = labels.cpu().numpy().astype(np.int32)
    labels_np[(best <= 0).cpu().numpy()] = NONE
    segments = []
    for c in np.unique(labels_np):
        if c == NONE:
            continue
        region = torch.from_numpy(labels_np == c).to(share.device)
        segments.append({"id": int(c), "class": names[c], "score": round(float(share[region].mean()), 4),
                         "area": int(region.sum())})
    return Prediction(labels_np, segments)


def _run_mask2former(processor: Any, image: np.ndarray, device: torch.device,
                     forward) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits float[Q, C + 1], mask probabilities float[Q, H, W]) of one image; `forward(pixels,
    pixel_mask)` returns the last layer's (class logits [1, Q, C + 1], mask logits [1, Q, h, w])."""
    inputs = processor(images=[image], return_tensors="pt")
    pixel_mask = inputs.get("pixel_mask")
    pixels = inputs["pixel_values"].to(device)
    classes, masks = forward(pixels, None if pixel_mask is None else pixel_mask.to(device))
    padded = tuple(pixels.shape[-2:])
    return classes[0].float(), query_mask_probs(masks[0], padded, valid_size(pixel_mask, 0, padded), image.shape[:2])


class SegmenterPredictor:
    """Model B, optionally ensembled with a CLIP's masked-crop probabilities at weight `lam`."""

    def __init__(self, folder: str, device: torch.device, clip: CropClassifier | None = None,
                 lam: float = 0.7, s3: S3Options | None = None) -> None:
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"--ensemble-lambda must be in [0, 1], got {lam}")
        if is_s3(folder):   # a segmenter `ovmine train segmenter --output s3://...` published
            folder = str(fetch_s3_folder(Location.of(folder, s3), META_FILE))
        loaded = load_segmenter(folder, device)
        self.model, self.processor, self.meta = loaded.model, loaded.processor, loaded.meta
        self.device, self.crops, self.lam = device, clip, lam
        regions = RegionsConfig.model_validate(loaded.clip)
        self.text_clip, self.templates = load_clip(regions, device, s3), regions.templates
        self._text: dict[tuple[str, ...], torch.Tensor] = {}

    def ensembled(self, clip: CropClassifier, lam: float) -> "SegmenterPredictor":
        """The same loaded segmenter (shared, not reloaded), ensembled with `clip` at weight `lam`."""
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"--ensemble-lambda must be in [0, 1], got {lam}")
        twin = copy.copy(self)
        twin.crops, twin.lam = clip, lam
        return twin

    def text(self, names: list[str]) -> torch.Tensor:
        key = tuple(names)
        if key not in self._text:
            self._text[key] = text_embeddings(self.text_clip, names, self.device, self.templates)
        return self._text[key]

    @torch.inference_mode()
    def query_scores(self, image: np.ndarray, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.text(names)

        def forward(pixels, pixel_mask):
            classes, masks = self.model(pixels, pixel_mask, text)
            return classes[-1], masks[-1]

        logits, masks = _run_mask2former(self.processor, image, self.device, forward)
        probs = logits.softmax(-1)[:, :-1]
        if self.crops is not None and self.lam > 0:
            clip_probs, has_crop = self.crops(image, masks > 0.5, names)
            probs = geometric_ensemble(probs, clip_probs, self.lam, has_crop)
        return probs, masks

    def __call__(self, image: np.ndarray, names: list[str]) -> Prediction:
        return semantic_prediction(*self.query_scores(image, names), names)


class TeacherClipPredictor:
    """The teacher's kept queries classified by a CLIP's masked crops alone (no segmenter)."""

    def __init__(self, teacher: Mask2FormerConfig, clip: CropClassifier, device: torch.device) -> None:
        self.cfg, self.crops, self.device = teacher, clip, device
        model, self.processor = load_mask2former(teacher.model)
        self.model = model.to(device).eval()

    @torch.inference_mode()
    def query_scores(self, image: np.ndarray, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        def forward(pixels, pixel_mask):
            out = self.model(pixel_values=pixels, pixel_mask=pixel_mask)
            return out.class_queries_logits, out.masks_queries_logits

        logits, masks = _run_mask2former(self.processor, image, self.device, forward)
        objectness = 1.0 - logits.softmax(-1)[:, -1]
        top = torch.argsort(objectness, descending=True)[: self.cfg.top_n]
        top = top[objectness[top] >= self.cfg.min_score]
        masks, objectness = masks[top], objectness[top]
        clip_probs, _ = self.crops(image, masks > self.cfg.mask_threshold, names)
        return objectness[:, None] * clip_probs, masks

    def __call__(self, image: np.ndarray, names: list[str]) -> Prediction:
        return semantic_prediction(*self.query_scores(image, names), names)
