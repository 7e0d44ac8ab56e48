"""Open-vocabulary semantic segmentation scored against COCO-format ground truth (`ovmine eval-seg`).

The ground truth's category names are the vocabulary. Each image's ground-truth label map paints its
(non-crowd) annotations in file order, a later one over an earlier one; a pixel no annotation covers is
ignored. Scores come from one confusion matrix per variant, summed over all images:

- rows: ground-truth class of a labelled pixel; columns: predicted class, plus one column for "no class"
  (a pixel no query claims, which is wrong for every ground-truth class and a false positive for none);
- IoU_c = TP_c / (GT_c + P_c - TP_c), GT_c the row's sum, P_c the column's; a class absent from both the
  ground truth and the predictions has no IoU and is left out of the mean (mmsegmentation's nan-mean);
- mIoU = the mean IoU over the classes that have one; pixel accuracy = Σ TP / labelled pixels.

Images are found by the ground truth's `key` (or file-name stem) among the images of the shards (or image
files) given; by default the `shards/` folder beside the ground-truth file, as a toy world lays it out.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from mining import masks
from mining.evaluation.ground_truth import GroundTruth, load_ground_truth
from mining.evaluation.run import refuse_partial
from mining.sources.decode import decode_image
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.sources.uris import expand_inputs
from mining.storage import Location, S3Options, Where

IGNORE = -1     # ground truth: a pixel no annotation covers
NONE = -1       # prediction: a pixel no class was given
MAX_PIXELS = 1 << 28


class ConfusionMatrix:
    """int64[C, C + 1]: ground-truth class x predicted class (the last column: no class)."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.matrix = np.zeros((classes, classes + 1), np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """gt int[H, W] (IGNORE where unlabelled), pred int[H, W] (NONE where no class), same shape."""
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
        keep = gt != IGNORE
        g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
        p = np.where(p == NONE, self.classes, p)
        if g.size and (g.max() >= self.classes or p.max() > self.classes or g.min() < 0 or p.min() < 0):
            raise ValueError(f"label out of range for {self.classes} classes")
        self.matrix += np.bincount(g * (self.classes + 1) + p,
                                   minlength=self.classes * (self.classes + 1)).reshape(self.matrix.shape)

    def ious(self) -> list[float | None]:
        tp = np.diag(self.matrix[:, :self.classes]).astype(np.float64)
        gt = self.matrix.sum(1)
        pred = self.matrix[:, :self.classes].sum(0)
        union = gt + pred - tp
        return [float(t / u) if u > 0 else None for t, u in zip(tp, union)]

    def metrics(self, names: list[str]) -> dict[str, Any]:
        ious = self.ious()
        valid = [v for v in ious if v is not None]
        labelled = int(self.matrix.sum())
        correct = int(np.trace(self.matrix[:, :self.classes]))
        return {"miou": round(float(np.mean(valid)), 4) if valid else None,
                "pixel_accuracy": round(correct / labelled, 4) if labelled else None,
                "labelled_pixels": labelled, "unclaimed_pixels": int(self.matrix[:, -1].sum()),
                "per_class_iou": {n: None if v is None else round(v, 4) for n, v in zip(names, ious)}}


def category_names(gt: GroundTruth) -> list[str]:
    """The vocabulary: the categories' names, underscores as spaces (COCO-Stuff writes 'playingfield' but
    also 'traffic_light')."""
    return [c["name"].replace("_", " ") for c in gt.categories]


def gt_label_map(gt: GroundTruth, image: dict) -> np.ndarray:
    """int32[H, W] class index (position in gt.categories) per pixel, IGNORE where no annotation."""
    index = {c["id"]: i for i, c in enumerate(gt.categories)}
    labels = np.full((image["height"], image["width"]), IGNORE, np.int32)
    for ann, rle in zip(gt.instances.get(image["id"], []), gt.rles(image)):
        if ann["category_id"] not in index:
            raise ValueError(f"annotation {ann.get('id')} names category {ann['category_id']}, which the ground "
                             f"truth's categories do not list")
        labels[masks.decode(rle)] = index[ann["category_id"]]
    return labels


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an int32 label map (labels stay exact)."""
    if labels.shape == (height, width):
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.int32), mode="I").resize((width, height), Image.NEAREST),
                      dtype=np.int32)


def default_images(gt: Location) -> list[str]:
    """The `shards/` folder beside the ground truth (a toy world's layout)."""
    return [(gt.parent if "/" in gt.uri else gt.at(".")).join("shards").uri]


def iter_gt_images(gt: GroundTruth, sources: list[str], s3: S3Options | None = None,
                   limit: int | None = None, unmatched: set[str] | None = None) -> Iterator[tuple[dict, np.ndarray]]:
    """(ground-truth image entry, uint8[H, W, 3] decoded at most at the entry's size) for every image of
    `sources` (shards or image files) that the ground truth lists, each once, at most `limit`; the keys it
    does not list are added to `unmatched`."""
    seen: set[str] = set()
    files = [s for s in sources if PurePosixPath(s).suffix.lower().lstrip(".") in IMAGE_EXTS]
    shards = expand_inputs([s for s in sources if s not in files], s3) if len(files) < len(sources) else []

    def candidates() -> Iterator[tuple[str, bytes]]:
        for uri in files:
            yield PurePosixPath(uri).stem, Location.of(uri, s3).read()
        for uri in shards:
            for sample in read_shard(Location.of(uri, s3)):
                ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
                if ext:
                    yield sample.key, sample.members[ext]

    for key, raw in candidates():
        image = gt.images.get(key)
        if image is None and unmatched is not None:
            unmatched.add(key)
        if image is None or key in seen:
            continue
        seen.add(key)
        pixels, _ = decode_image(raw, MAX_PIXELS, max(image["height"], image["width"]))
        yield image, pixels
        if limit is not None and len(seen) >= limit:
            return


Predictor = Callable[[np.ndarray, list[str]], Any]   # (image, names) -> Prediction (labels, segments)


def evaluate_semantic(gt_uri: Where, variants: dict[str, Predictor], images: list[str] | None = None,
                      limit: int | None = None, allow_partial: bool = False) -> dict[str, Any]:
    """Score each variant's label maps on every ground-truth image found in `images` (default: the shards
    beside the ground truth); returns one report with a section per variant. Fails when fewer than half of
    the images read are in the ground truth, unless `allow_partial`."""
    if not variants:
        raise ValueError("nothing to evaluate: give --model DIR (the segmenter), or --teacher-config FILE with "
                         "--clip SPEC (teacher masks classified by a CLIP)")
    gt_file = Location.of(gt_uri)
    s3 = gt_file.s3   # the images are reached as the ground truth is
    gt = load_ground_truth(gt_file)
    names = category_names(gt)
    sources = images or default_images(gt_file)
    for uri in sources:
        if not any(ch in uri for ch in "{*?[") and not Location.of(uri, s3).exists():
            raise FileNotFoundError(f"images not found: {uri} (give the evaluation images with --images "
                                    f"SHARDS_OR_FILES)")
    matrices = {name: ConfusionMatrix(len(names)) for name in variants}
    count, unmatched = 0, set()
    for image, pixels in iter_gt_images(gt, sources, s3, limit, unmatched):
        truth = gt_label_map(gt, image)
        for name, predict in variants.items():
            labels = predict(pixels, names).labels
            matrices[name].update(truth, resize_labels(labels, *truth.shape))
        count += 1
    if count == 0:
        raise ValueError(f"no image of {gt_uri} found in {', '.join(sources)} (images are matched by the ground "
                         f"truth's key or file-name stem)")
    refuse_partial(count, count + len(unmatched), gt_file, "images'", allow_partial)
    return {"ground_truth": gt_file.uri, "images": count, "images_in_ground_truth": len(gt.images),
            "images_not_in_ground_truth": len(unmatched),
            "classes": names, "variants": {name: m.metrics(names) for name, m in matrices.items()}}
