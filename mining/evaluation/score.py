"""Pair precision and recall of a mining output against ground truth.

- A pair is correct when its mask has IoU >= `iou` with a ground-truth instance of the category its noun
  names (through lemmas and synonyms). A noun that names no category cannot be right when the ground truth
  is exhaustive (the toy world annotates everything visible); otherwise (COCO's 80 classes) it is counted
  as unjudged and left out of precision.
- Minable: a ground-truth instance whose category a caption of its image mentions. It is recalled when a
  correct pair covers it. `noun_recall` asks less: per (image, mentioned present category), some correct pair.
Every image of the input shards the run covered counts, with pairs or not (a dropped image's minable
instances are all missed); captions are read from those shards exactly as the run read them.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from mining.evaluation.ground_truth import GroundTruth
from mining.evaluation.names import CategoryNames
from mining.sinks.layout import shard_uri
from mining.sinks.reader import MinedRecord, read_shard_records
from mining.sources.decode import decode_image, extract_captions
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.storage import S3Options, exists
from mining.teachers.base import encode_rle, resize_mask

@dataclass
class Tally:
    """Counts of pairs and minable instances, for one image or category, or summed over many."""

    pairs: int = 0          # judged pairs
    correct: int = 0
    minable: int = 0
    recalled: int = 0
    unjudged: int = 0       # pairs whose noun names no category (non-exhaustive ground truth)
    noun_minable: int = 0   # (image, mentioned present category)
    noun_recalled: int = 0

    def add(self, other: "Tally") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "correct": self.correct,
                "precision": round(self.correct / self.pairs, 4) if self.pairs else None,
                "minable": self.minable, "recalled": self.recalled,
                "recall": round(self.recalled / self.minable, 4) if self.minable else None}


@dataclass
class ImageResult:
    total: Tally = field(default_factory=Tally)
    per_category: dict[int, Tally] = field(default_factory=lambda: defaultdict(Tally))


def _mined_rles(record: MinedRecord, height: int, width: int) -> list[dict]:
    rles = [{"size": m.rle["size"], "counts": m.rle["counts"].encode("ascii")} for m in record.masks]
    if (record.height, record.width) == (height, width):
        return rles
    return encode_rle(np.stack([resize_mask(m.decode(), height, width) for m in record.masks]))


def score_image(record: MinedRecord | None, captions: list[str], image: dict, gt: GroundTruth,
                names: CategoryNames, iou_threshold: float, exhaustive: bool) -> ImageResult:
    anns = gt.instances.get(image["id"], [])
    gt_rles = gt.rles(image)
    gt_cats = [a["category_id"] for a in anns]
    result = ImageResult()
    covered: set[int] = set()
    correct_cats: set[int] = set()
    if record is not None and record.pairs:
        mined = _mined_rles(record, image["height"], image["width"])
        ious = (np.asarray(mask_utils.iou(mined, gt_rles, [0] * len(gt_rles))).reshape(len(mined), len(gt_rles))
                if gt_rles else np.zeros((len(mined), 0)))
        for pair in record.pairs:
            cid = names.category_of(pair.noun)
            if cid is None and not exhaustive:
                result.total.unjudged += 1
                continue
            result.total.pairs += 1
            hits = [g for g in range(len(gt_rles)) if gt_cats[g] == cid and ious[pair.mask_index, g] >= iou_threshold]
            if cid is not None:
                result.per_category[cid].pairs += 1
            if hits:
                result.total.correct += 1
                result.per_category[cid].correct += 1
                covered.update(hits)
                correct_cats.add(cid)
    mentioned = names.mentioned(captions)
    for g, cid in enumerate(gt_cats):
        if cid in mentioned:
            result.total.minable += 1
            result.per_category[cid].minable += 1
            if g in covered:
                result.total.recalled += 1
                result.per_category[cid].recalled += 1
    present = mentioned & set(gt_cats)
    result.total.noun_minable = len(present)
    result.total.noun_recalled = len(present & correct_cats)
    return result


def evaluate_output(output: str, manifest: dict, gt: GroundTruth, names: CategoryNames, iou_threshold: float = 0.5,
                    unknown_nouns: str | None = None, s3: S3Options | None = None,
                    region_scorer=None, progress: bool = True) -> dict[str, Any]:
    """Score every image of the input shards the output (with this manifest) covers. `unknown_nouns`: 'wrong' or 'skip'
    (default: wrong when the ground truth says it is exhaustive). `region_scorer`, if given, is called with
    (image, GT image entry) for every scored image to classify its ground-truth masks."""
    if unknown_nouns not in (None, "wrong", "skip"):
        raise ValueError(f"unknown_nouns must be 'wrong' or 'skip', not {unknown_nouns!r}")
    exhaustive = gt.exhaustive if unknown_nouns is None else unknown_nouns == "wrong"
    source = manifest["config"]["source"]
    totals = ImageResult()
    counts: Counter[str] = Counter()
    for shard in tqdm(manifest["shards"], desc="eval", unit="shard", disable=not progress):
        if shard["images_in"] == 0:
            continue
        out_uri = shard_uri(output, shard["name"])
        records = {r.key: r for r in read_shard_records(out_uri, s3)} if exists(out_uri, s3) else {}
        # a --limit run mined the first images_in samples of its last shard
        for sample in read_shard(shard["input"], s3, max_samples=shard["images_in"]):
            image = gt.images.get(sample.key)
            if image is None:
                counts["images_not_in_ground_truth"] += 1
                continue
            captions, _ = extract_captions(sample.members, source["caption_json_fields"],
                                           source["captions_per_image"])
            record = records.get(sample.key)
            counts["images"] += 1
            counts["images_with_pairs"] += int(record is not None)
            r = score_image(record, captions, image, gt, names, iou_threshold, exhaustive)
            totals.total.add(r.total)
            for cid, t in r.per_category.items():
                totals.per_category[cid].add(t)
            ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
            if region_scorer is not None and ext:
                pixels, _ = decode_image(sample.members[ext], source["max_image_pixels"], source["working_size"])
                region_scorer(pixels, image)
    t = totals.total
    report = {
        "output": output, "iou_threshold": iou_threshold,
        "unknown_nouns": "wrong" if exhaustive else "skip",
        "images": counts["images"], "images_with_pairs": counts["images_with_pairs"],
        "images_not_in_ground_truth": counts["images_not_in_ground_truth"],
        "pairs": t.pairs + t.unjudged, "judged_pairs": t.pairs, "unjudged_pairs": t.unjudged,
        "correct_pairs": t.correct,
        "precision": round(t.correct / t.pairs, 4) if t.pairs else None,
        "minable": t.minable, "recalled": t.recalled,
        "recall": round(t.recalled / t.minable, 4) if t.minable else None,
        "noun_minable": t.noun_minable, "noun_recalled": t.noun_recalled,
        "noun_recall": round(t.noun_recalled / t.noun_minable, 4) if t.noun_minable else None,
        "per_category": {names.names[c]: tally.to_json() for c, tally in sorted(totals.per_category.items())},
        "images_per_second": manifest.get("images_per_second"),
        "unique_nouns": manifest["totals"]["unique_nouns"],
    }
    return report
