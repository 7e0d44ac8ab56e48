"""Mask2Former / MaskFormer through transformers, used class-agnostically: a query's score is
1 - p(no-object), whatever class it would have named (OpenSeg §3.3, OVSeg §3.1)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mining.config import Mask2FormerConfig
from mining.devices import resolve_device


def _model_class(model_type: str):
    from transformers import Mask2FormerForUniversalSegmentation, MaskFormerForInstanceSegmentation

    classes = {"mask2former": Mask2FormerForUniversalSegmentation, "maskformer": MaskFormerForInstanceSegmentation}
    if model_type not in classes:
        raise ValueError(f"teacher.mask2former.model is a {model_type!r} model; expected one of {sorted(classes)}")
    return classes[model_type]


class Mask2FormerTeacher:
    def __init__(self, cfg: Mask2FormerConfig, device: str = "auto") -> None:
        from transformers import AutoConfig, AutoImageProcessor

        self.cfg = cfg
        self.device = resolve_device(device)
        model_type = AutoConfig.from_pretrained(cfg.model).model_type
        self.processor = AutoImageProcessor.from_pretrained(cfg.model)
        self.model = _model_class(model_type).from_pretrained(cfg.model).to(self.device).eval()

    @torch.inference_mode()
    def predict(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixel_mask = inputs.get("pixel_mask")
        out = self.model(pixel_values=inputs["pixel_values"].to(self.device),
                         pixel_mask=None if pixel_mask is None else pixel_mask.to(self.device))
        scores = 1.0 - out.class_queries_logits.softmax(-1)[..., -1]    # [B, Q]
        logits = out.masks_queries_logits                               # [B, Q, h, w] at 1/4 of padded input
        padded_h, padded_w = inputs["pixel_values"].shape[-2:]
        results = []
        for b, image in enumerate(images):
            h, w = image.shape[:2]
            score = scores[b]
            top = torch.argsort(score, descending=True)[: self.cfg.top_n]
            top = top[score[top] >= self.cfg.min_score]
            if len(top) == 0:
                results.append((np.zeros((0, h, w), bool), np.zeros(0, np.float32)))
                continue
            # upsample only the chosen queries: the valid (unpadded) area, then the image frame
            if pixel_mask is not None:
                valid_h = int(pixel_mask[b].any(1).sum())
                valid_w = int(pixel_mask[b].any(0).sum())
            else:
                valid_h, valid_w = padded_h, padded_w
            m = F.interpolate(logits[b, top][None], size=(padded_h, padded_w), mode="bilinear", align_corners=False)
            m = F.interpolate(m[:, :, :valid_h, :valid_w], size=(h, w), mode="bilinear", align_corners=False)[0]
            masks = (m.sigmoid() > self.cfg.mask_threshold).cpu().numpy()
            results.append((masks, score[top].float().cpu().numpy()))
        return results
