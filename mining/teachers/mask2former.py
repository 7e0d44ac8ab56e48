"""Mask2Former / MaskFormer through transformers, used class-agnostically: a query's class score is
1 - p(no-object), whatever class it would have named (OpenSeg §3.3, OVSeg §3.1).

teacher.mask2former.score picks a proposal's score:
  no_object  the class score alone;
  instance   the class score times the mean mask probability inside the binarised mask, as Mask2Former
             scores instances (transformers' `post_process_instance_segmentation`): a confident query with
             a hesitant, blurry mask ranks lower.
The top_n queries are chosen by class score in both cases (the instance score needs each mask upsampled,
so only those are); min_score and the order then follow the chosen score.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mining.config import Mask2FormerConfig
from mining.devices import (AUTOCAST_DTYPES, compiled, forward_precision, keep_fp32, resolve_device,
                            resolve_precision, to_device)


def _model_class(model_type: str):
    from transformers import Mask2FormerForUniversalSegmentation, MaskFormerForInstanceSegmentation

    classes = {"mask2former": Mask2FormerForUniversalSegmentation, "maskformer": MaskFormerForInstanceSegmentation}
    if model_type not in classes:
        raise ValueError(f"teacher.mask2former.model is a {model_type!r} model; expected one of {sorted(classes)}")
    return classes[model_type]


def instance_scores(class_scores: torch.Tensor, probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """float[Q]: class_scores[Q] x the mean of probs[Q, H, W] over pixels where probs > threshold (the
    binarised mask); 0 for a mask that is empty after binarising."""
    inside = (probs > threshold).flatten(1).float()
    mean_prob = (probs.flatten(1) * inside).sum(1) / inside.sum(1).clamp_min(1.0)
    return class_scores * mean_prob


def _valid_size(pixel_mask: torch.Tensor | None, b: int, padded: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of image b's unpadded area in the processor's padded batch."""
    if pixel_mask is None:
        return padded
    return int(pixel_mask[b].any(1).sum()), int(pixel_mask[b].any(0).sum())


class Mask2FormerTeacher:
    """Everything per image happens on the teacher's device: the uint8 pixels cross to it, transformers'
    torchvision-backed processor resizes, normalises and pads there, and the masks stay there for the
    post-filters (`postfilter_masks`), so only the kept masks come back. On the CPU the masks are returned as
    numpy, where run-length encoding counts their areas on the way."""

    def __init__(self, cfg: Mask2FormerConfig, device: str = "auto", precision: str = "fp32",
                 compile: bool = False) -> None:
        from transformers import AutoConfig, AutoImageProcessor

        self.cfg = cfg
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        model_type = AutoConfig.from_pretrained(cfg.model).model_type
        self.processor = AutoImageProcessor.from_pretrained(cfg.model)
        model = _model_class(model_type).from_pretrained(cfg.model).to(self.device).eval()
        decoder = getattr(model.model, "transformer_module", None)
        if self.precision in AUTOCAST_DTYPES and decoder is not None:
            # the backbone and pixel decoder (most of the FLOPs) run reduced; the query decoder, whose mask
            # logits and class scores meet thresholds, stays fp32: all of it in bf16 moved 3% of the toy
            # world's pairs, this 1-2% (bench/precision.py)
            keep_fp32(decoder)
        self.model = compiled(model, compile)

    def preprocess(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The processor's pixel_values (and pixel_mask), computed on the teacher's device."""
        pixels = [to_device(image, self.device).permute(2, 0, 1) for image in images]
        return self.processor(images=pixels, return_tensors="pt", device=self.device,
                              input_data_format="channels_first")

    def _mask_probs(self, logits: torch.Tensor, padded: tuple[int, int], valid: tuple[int, int],
                    size: tuple[int, int]) -> torch.Tensor:
        """float[Q, H, W] mask probabilities in the image's frame from float[Q, h, w] logits at 1/4 of the
        padded input: upsampled to the padded input, cut to the valid (unpadded) area, then to the image."""
        m = F.interpolate(logits[None], size=padded, mode="bilinear", align_corners=False)
        m = F.interpolate(m[:, :, :valid[0], :valid[1]], size=size, mode="bilinear", align_corners=False)[0]
        return m.sigmoid()

    @torch.inference_mode()
    def predict(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each uint8[H, W, 3] image: bool[N, H, W] masks and float32[N] scores, best first (torch tensors
        on a CUDA device, numpy on the CPU)."""
        inputs = self.preprocess(images)
        pixel_mask = inputs.get("pixel_mask")
        with forward_precision(self.device, self.precision):
            out = self.model(pixel_values=inputs["pixel_values"], pixel_mask=pixel_mask)
        class_scores = 1.0 - out.class_queries_logits.float().softmax(-1)[..., -1]    # [B, Q]
        mask_logits = out.masks_queries_logits.float()
        padded = tuple(inputs["pixel_values"].shape[-2:])
        results = []
        for b, image in enumerate(images):
            h, w = image.shape[:2]
            top = torch.argsort(class_scores[b], descending=True)[: self.cfg.top_n]
            if self.cfg.score == "no_object":
                top = top[class_scores[b, top] >= self.cfg.min_score]   # before upsampling: fewer masks
            if len(top) == 0:
                results.append((np.zeros((0, h, w), bool), np.zeros(0, np.float32)))
                continue
            # upsample only the chosen queries
            probs = self._mask_probs(mask_logits[b, top], padded, _valid_size(pixel_mask, b, padded),
                                     (h, w))
            score = class_scores[b, top]
            if self.cfg.score == "instance":
                score = instance_scores(score, probs, self.cfg.mask_threshold)
                order = torch.argsort(score, descending=True, stable=True)
                order = order[score[order] >= self.cfg.min_score]
                probs, score = probs[order], score[order]
            masks = probs > self.cfg.mask_threshold
            if self.device.type == "cuda":
                results.append((masks, score))
            else:
                results.append((masks.numpy(), score.numpy()))
        return results
