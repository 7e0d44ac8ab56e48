"""SAM automatic mask generation through transformers' mask-generation pipeline: a point grid, predicted-IoU
and stability filters, box NMS. Defaults are SAM's own (32x32 points, IoU 0.88, stability 0.95, NMS 0.7)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mining.config import SamConfig
from mining.devices import AUTOCAST_DTYPES, forward_precision, keep_fp32, resolve_device, resolve_precision


class SamTeacher:
    def __init__(self, cfg: SamConfig, device: str = "auto", precision: str = "fp32") -> None:
        from transformers import pipeline

        self.cfg = cfg
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.generator = pipeline("mask-generation", model=cfg.model, device=self.device)
        decoder = getattr(self.generator.model, "mask_decoder", None)
        if self.precision in AUTOCAST_DTYPES and decoder is not None:
            # its IoU scores meet the pipeline's thresholds and NMS on the host, in fp32 beside fp32 boxes
            keep_fp32(decoder)

    def predict(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        results = []
        for image in images:
            h, w = image.shape[:2]
            with forward_precision(self.device, self.precision):
                out = self._generate(image)
            if len(out["masks"]) == 0:
                results.append((np.zeros((0, h, w), bool), np.zeros(0, np.float32)))
                continue
            masks = np.stack([np.asarray(m, dtype=bool) for m in out["masks"]])
            scores = torch.as_tensor(out["scores"]).float().cpu().numpy()
            results.append((masks, scores))
        return results

    def _generate(self, image: np.ndarray) -> dict:
        return self.generator(
            Image.fromarray(image),
            points_per_crop=self.cfg.points_per_side,
            points_per_batch=self.cfg.points_per_batch,
            pred_iou_thresh=self.cfg.pred_iou_thresh,
            stability_score_thresh=self.cfg.stability_score_thresh,
            crops_nms_thresh=self.cfg.box_nms_thresh,
        )
