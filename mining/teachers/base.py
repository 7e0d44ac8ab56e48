"""The teacher protocol and the post-filters every teacher shares."""
from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


class Teacher(Protocol):
    def predict(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each uint8[H, W, 3] image: (bool[N, H, W] masks in the image's frame, float32[N] scores)."""
        ...


def encode_rle(masks: np.ndarray) -> list[dict]:
    """COCO RLE of bool[N, H, W] masks (pycocotools wants Fortran-ordered uint8[H, W, N])."""
    if len(masks) == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def rle_json(masks: np.ndarray) -> list[dict]:
    """COCO RLE of bool[N, H, W] masks as JSON-ready dicts (string counts), as records and COCO files hold."""
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in encode_rle(masks)]


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of bool[h, w] to bool[height, width]: labels stay exact."""
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))


def postfilter_masks(masks: np.ndarray, scores: np.ndarray, min_area: int, dedupe_iou: float,
                     max_masks: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first: drop masks under `min_area` pixels and masks overlapping an already kept one with
    IoU > `dedupe_iou`, keep at most `max_masks`. Ties in score go to the larger mask."""
    if len(masks) == 0:
        return masks, scores
    areas = masks.reshape(len(masks), -1).sum(1)
    order = np.lexsort((-areas, -scores))
    order = order[areas[order] >= min_area]
    if len(order) == 0:
        return masks[:0], scores[:0]
    rles = encode_rle(masks[order])
    ious = mask_utils.iou(rles, rles, [0] * len(rles))
    kept: list[int] = []
    for i in range(len(order)):
        if all(ious[i, j] <= dedupe_iou for j in kept):
            kept.append(i)
            if len(kept) == max_masks:
                break
    chosen = order[kept]
    return masks[chosen], scores[chosen].astype(np.float32)
