"""The teacher alone: which share of ground-truth instances some proposed mask covers at IoU >= `iou`."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mining.evaluation.ground_truth import GroundTruth
from mining import masks as rle
from mining.teachers.base import Teacher, on_host


def teacher_instance_recall(teacher: Teacher, gt: GroundTruth, images: Iterable[tuple[str, np.ndarray]],
                            iou: float = 0.5) -> tuple[float, float]:
    """(recall, proposed masks per image) over `images`: (ground-truth key, uint8[H, W, 3] in the ground
    truth's frame)."""
    found = total = proposed = seen = 0
    for key, pixels in images:
        masks = on_host(teacher.predict([pixels])[0][0])
        proposed += len(masks)
        seen += 1
        truth = gt.rles(gt.images[key])
        total += len(truth)
        if len(masks) and truth:
            ious = rle.iou(rle.encode(masks), truth)
            found += int((ious.max(0) >= iou).sum())
    return (found / total if total else 0.0), (proposed / seen if seen else 0.0)
