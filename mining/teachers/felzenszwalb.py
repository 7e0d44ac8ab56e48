"""Weights-free baseline: Felzenszwalb graph segments at several scales (small scale = parts, large =
wholes), so proposals overlap the way a learnt teacher's do. It has no confidence: every score is 1."""
from __future__ import annotations

import numpy as np
from PIL import Image
from skimage.segmentation import felzenszwalb

from mining.config import FelzenszwalbConfig


class FelzenszwalbTeacher:
    def __init__(self, cfg: FelzenszwalbConfig) -> None:
        self.cfg = cfg

    def _segment(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = min(1.0, self.cfg.input_size / max(h, w))
        small = image
        if scale < 1:
            small = np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                            Image.BILINEAR))
        masks = []
        for s in self.cfg.scales:
            labels = felzenszwalb(small, scale=s, sigma=self.cfg.sigma, min_size=self.cfg.min_size)
            if scale < 1:  # nearest keeps labels exact when scaling back to the working frame
                labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize((w, h), Image.NEAREST))
            ids = np.unique(labels)
            masks.append(labels[None] == ids[:, None, None])
        return np.concatenate(masks) if masks else np.zeros((0, h, w), bool)

    def predict(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for image in images:
            masks = self._segment(image)
            out.append((masks, np.ones(len(masks), np.float32)))
        return out
