"""The teacher protocol and the post-filters every teacher shares."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from mining import masks as rle


class Teacher(Protocol):
    def predict(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each uint8[H, W, 3] image: (bool[N, H, W] masks in the image's frame, float32[N] scores), as
        numpy or as torch tensors on the teacher's device (`on_host` brings them back)."""
        ...


def on_host(array) -> np.ndarray:
    """A teacher's output as numpy, wherever it was computed."""
    return array if isinstance(array, np.ndarray) else array.cpu().numpy()


def postfilter_masks(masks, scores, min_area: int, dedupe_iou: float,
                     max_masks: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Best-first: drop masks under `min_area` pixels and masks overlapping an already kept one with
    IoU > `dedupe_iou`, keep at most `max_masks`. Ties in score go to the larger mask. Returns the kept masks,
    their scores and their COCO RLEs as JSON (encoded here once: the record stores them).

    `masks` is bool[N, H, W] numpy on the host, or a torch tensor on the teacher's device: there areas and
    overlaps are counted where the masks are, and only the kept ones come back to be run-length encoded."""
    if not isinstance(masks, np.ndarray):
        return _postfilter_on_device(masks, scores, min_area, dedupe_iou, max_masks)
    if len(masks) == 0:
        return masks, scores, []
    # one pass over the pixels: the RLEs give the areas too (a sum over the pixels costs 40% of the RLE)
    all_rles = rle.encode(masks)
    areas = rle.areas(all_rles)
    order = np.lexsort((-areas, -scores))
    order = order[areas[order] >= min_area]
    if len(order) == 0:
        return masks[:0], scores[:0], []
    rles = [all_rles[i] for i in order]
    kept = _best_first(rle.iou(rles, rles), dedupe_iou, max_masks)
    chosen = order[kept]
    return masks[chosen], scores[chosen].astype(np.float32), rle.to_json([rles[i] for i in kept])


def _best_first(ious: np.ndarray, dedupe_iou: float, max_masks: int) -> list[int]:
    """Indices, in order, of the masks kept walking best-first: none overlaps an earlier kept one above
    `dedupe_iou`; at most `max_masks`."""
    kept: list[int] = []
    for i in range(len(ious)):
        if all(ious[i, j] <= dedupe_iou for j in kept):
            kept.append(i)
            if len(kept) == max_masks:
                break
    return kept


def _postfilter_on_device(masks, scores, min_area: int, dedupe_iou: float,
                          max_masks: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """`postfilter_masks` on torch tensors, the same choice as on the host: areas and pairwise intersections are
    pixel counts (exact in float32 below 2**24 pixels a mask), and the IoU is divided in float64 as pycocotools
    divides it."""
    import torch

    n, h, w = masks.shape
    if n == 0:
        return np.zeros((0, h, w), bool), np.zeros(0, np.float32), []
    flat = masks.reshape(n, -1)
    areas = flat.sum(1)
    order = torch.argsort(-areas, stable=True)              # the larger mask first among equal scores
    order = order[torch.argsort(-scores[order], stable=True)]
    order = order[areas[order] >= min_area]
    if len(order) == 0:
        return np.zeros((0, h, w), bool), np.zeros(0, np.float32), []
    chosen_flat = flat[order].float()
    inter = (chosen_flat @ chosen_flat.T).double()
    area = areas[order].double()
    ious = (inter / (area[:, None] + area[None, :] - inter).clamp_min(1)).cpu().numpy()
    chosen = order[_best_first(ious, dedupe_iou, max_masks)]
    kept = masks[chosen].cpu().numpy()
    return kept, scores[chosen].float().cpu().numpy(), rle.to_json(rle.encode(kept))
