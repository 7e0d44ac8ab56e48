"""Pair precision and recall of a mining output against ground truth.

Definitions (per image; totals and per-category figures are sums over images):

- Judged pair: a pair whose noun names a category (through lemmas and synonyms). A noun that names no category
  cannot be right when the ground truth is exhaustive (the toy world annotates everything visible), so it is
  judged (and wrong); otherwise (COCO's 80 classes) it is *unjudged* and left out of precision.
- Eligible (pair, instance): the pair's noun names the instance's category and the pair's mask has IoU >= `iou`
  with the instance.
- Matching: pairs and instances are matched ONE TO ONE over the eligible entries: a maximum-cardinality
  matching, and among those the one with the largest total IoU (`match_one_to_one`). One pair thus recalls at
  most one instance, even when a low `--iou` or overlapping ground truth makes its mask eligible for several.
- Correct pair: a matched pair. precision = correct / judged pairs.
- Duplicate pair: eligible for some instance but left unmatched, because every instance it could take is
  matched to another pair (a second pair on the same object). As in COCO's evaluation, where a detection on an
  already-matched ground truth is a false positive, a duplicate counts as WRONG in precision; `duplicate_pairs`
  reports how many of the wrong pairs are duplicates rather than misses.
- Minable: a ground-truth instance whose category a caption of its image mentions. It is recalled when the
  matching gives it a pair. recall = recalled / minable. `noun_recall` asks less: per (image, mentioned present
  category), some correct pair.
Every image of the input shards the mining run read counts, with pairs or not (a dropped image's minable
instances are all missed); captions are read from those shards exactly as the run read them. For a curated
output the input shards are found by following its lineage back to the mining run (`input_shards`): its own
shard tars hold only the images that kept pairs. Margins and probabilities play no part: they may be null.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from mining.evaluation.ground_truth import GroundTruth
from mining.evaluation.names import CategoryNames
from mining.sinks.layout import shard_file
from mining.sinks.reader import MinedRecord, read_manifest, read_shard_records
from mining.sources.decode import decode_image, extract_captions
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.storage import Location, Where
from mining import masks


@dataclass
class Tally:
    """Counts of pairs and minable instances, for one image or category, or summed over many."""

    pairs: int = 0          # judged pairs
    correct: int = 0        # judged pairs matched one to one to an instance
    duplicates: int = 0     # judged pairs eligible for an instance but unmatched (wrong, as in COCO)
    minable: int = 0
    recalled: int = 0
    unjudged: int = 0       # pairs whose noun names no category (non-exhaustive ground truth)
    noun_minable: int = 0   # (image, mentioned present category)
    noun_recalled: int = 0

    def add(self, other: "Tally") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "correct": self.correct, "duplicates": self.duplicates,
                "precision": round(self.correct / self.pairs, 4) if self.pairs else None,
                "minable": self.minable, "recalled": self.recalled,
                "recall": round(self.recalled / self.minable, 4) if self.minable else None}


RIGHT, WRONG, DUPLICATE, UNJUDGED = "right", "wrong", "duplicate", "unjudged"   # a pair's verdict


@dataclass
class ImageResult:
    total: Tally = field(default_factory=Tally)
    per_category: dict[int, Tally] = field(default_factory=lambda: defaultdict(Tally))
    verdicts: list[str] = field(default_factory=list)   # per pair of the record, in its order


def _mined_rles(record: MinedRecord, height: int, width: int) -> list[dict]:
    if (record.height, record.width) == (height, width):
        return [masks.native(m.rle) for m in record.masks]
    return masks.encode(np.stack([masks.resize(m.decode(), height, width) for m in record.masks]))


def match_one_to_one(eligible: np.ndarray, ious: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs of a maximum-cardinality matching over the `eligible` entries, and among those the
    one with the largest total IoU. Cardinality comes first because recall counts instances: a pair that could
    take either of two instances must take the one no other pair can. Each eligible entry weighs
    `big + IoU` with big > the largest possible matching, so one more match always outweighs any IoU gain."""
    if not eligible.any():
        return []
    big = min(eligible.shape) + 1.0
    weight = np.where(eligible, big + np.clip(ious, 0.0, 1.0), 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if eligible[r, c]]


def _judged_pairs(record: MinedRecord | None, names: CategoryNames, exhaustive: bool,
                  result: ImageResult) -> list[tuple[int, int | None]]:
    """(mask index, category or None) of each judged pair; unjudged pairs are only counted (and their verdict
    set: the judged pairs' verdicts are left empty for score_image)."""
    judged: list[tuple[int, int | None]] = []
    for pair in record.pairs if record is not None else []:
        cid = names.category_of(pair.noun)
        if cid is None and not exhaustive:
            result.total.unjudged += 1
            result.verdicts.append(UNJUDGED)
        else:
            judged.append((pair.mask_index, cid))
            result.verdicts.append("")
    return judged


def _eligibility(record: MinedRecord | None, judged: list[tuple[int, int | None]], image: dict,
                 gt_rles: list[dict], gt_cats: list[int], iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(eligible, IoU), both [judged pairs, instances]: eligible = the pair names the instance's category and
    its mask overlaps it at IoU >= the threshold."""
    shape = (len(judged), len(gt_rles))
    if not judged or not gt_rles:
        return np.zeros(shape, bool), np.zeros(shape)
    mined = _mined_rles(record, image["height"], image["width"])
    ious = masks.iou(mined, gt_rles)
    ious = ious[[m for m, _ in judged]]
    same = np.array([[cid is not None and cid == g for g in gt_cats] for _, cid in judged], bool).reshape(shape)
    return same & (ious >= iou_threshold), ious


def score_image(record: MinedRecord | None, captions: list[str], image: dict, gt: GroundTruth,
                names: CategoryNames, iou_threshold: float, exhaustive: bool) -> ImageResult:
    """One image's tallies under the definitions of the module docstring."""
    gt_rles = gt.rles(image)
    gt_cats = [a["category_id"] for a in gt.instances.get(image["id"], [])]
    result = ImageResult()
    judged = _judged_pairs(record, names, exhaustive, result)
    eligible, ious = _eligibility(record, judged, image, gt_rles, gt_cats, iou_threshold)
    matched = dict(match_one_to_one(eligible, ious))          # judged pair -> instance
    correct_cats: set[int] = set()
    slots = [i for i, v in enumerate(result.verdicts) if not v]   # where each judged pair's verdict goes
    for p, (_, cid) in enumerate(judged):
        result.total.pairs += 1
        tally = result.per_category[cid] if cid is not None else Tally()
        tally.pairs += 1
        if p in matched:
            result.total.correct += 1
            tally.correct += 1
            correct_cats.add(cid)
            result.verdicts[slots[p]] = RIGHT
        elif eligible[p].any():
            result.total.duplicates += 1
            tally.duplicates += 1
            result.verdicts[slots[p]] = DUPLICATE
        else:
            result.verdicts[slots[p]] = WRONG
    recalled = set(matched.values())
    mentioned = names.mentioned(captions)
    for g, cid in enumerate(gt_cats):
        if cid in mentioned:
            result.total.minable += 1
            result.per_category[cid].minable += 1
            if g in recalled:
                result.total.recalled += 1
                result.per_category[cid].recalled += 1
    present = mentioned & set(gt_cats)
    result.total.noun_minable = len(present)
    result.total.noun_recalled = len(present & correct_cats)
    return result


def mining_manifest(output: Where, manifest: dict) -> dict:
    """The manifest of the mining run `output` descends from: its own, or for a curated output (which may be
    curated from a curated output, and so on) the one its lineage leads back to. Only that manifest names the
    original input shards: a curated output's markers name the shard tars it was curated from, which hold just
    the images that kept pairs."""
    output = Location.of(output)
    seen = {output.uri.rstrip("/")}
    while "lineage" in manifest:
        parent = manifest["lineage"]["input"]
        if parent.rstrip("/") in seen:
            raise ValueError(f"{output}: its curation lineage loops back to {parent}")
        seen.add(parent.rstrip("/"))
        try:
            manifest = read_manifest(output.at(parent))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{output} is curated from {parent}, whose manifest.json is not found: the evaluator needs the "
                f"mining run's manifest to find the original input shards (images curation dropped count as "
                f"missed)") from None
    return manifest


def input_shards(output: Where, manifest: dict) -> list[dict]:
    """The mining run's shard entries (`input` URI, `name`, `images_in`) for each shard `output` has."""
    root = mining_manifest(output, manifest)
    if root is manifest:
        return manifest["shards"]
    by_name = {shard["name"]: shard for shard in root["shards"]}
    missing = [shard["name"] for shard in manifest["shards"] if shard["name"] not in by_name]
    if missing:
        raise ValueError(f"{output}: shards {', '.join(missing)} are not in the mining run it was curated from")
    return [by_name[shard["name"]] for shard in manifest["shards"]]


def evaluate_output(output: Where, manifest: dict, gt: GroundTruth, names: CategoryNames, iou_threshold: float = 0.5,
                    unknown_nouns: str | None = None,
                    region_scorer=None, progress: bool = True, on_image=None) -> dict[str, Any]:
    """Score every image of the input shards the output (with this manifest) covers (for a curated output,
    the mining run's input shards: see `input_shards`). `unknown_nouns`: 'wrong' or 'skip'
    (default: wrong when the ground truth says it is exhaustive). `region_scorer`, if given, is called with
    (image, GT image entry) for every scored image to classify its ground-truth masks; `on_image`, if given,
    with (output shard stem, record or None, ImageResult) for every scored image (the report's per-pair
    verdicts)."""
    if unknown_nouns not in (None, "wrong", "skip"):
        raise ValueError(f"unknown_nouns must be 'wrong' or 'skip', not {unknown_nouns!r}")
    output = Location.of(output)
    exhaustive = gt.exhaustive if unknown_nouns is None else unknown_nouns == "wrong"
    source = manifest["config"]["source"]
    totals = ImageResult()
    counts: Counter[str] = Counter()
    for shard in tqdm(input_shards(output, manifest), desc="eval", unit="shard", disable=not progress):
        if shard["images_in"] == 0:
            continue
        mined = shard_file(output, shard["name"])
        records = {r.key: r for r in read_shard_records(mined)} if mined.exists() else {}
        # a --limit run mined the first images_in samples of its last shard
        for sample in read_shard(output.at(shard["input"]), max_samples=shard["images_in"]):
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
            if on_image is not None:
                on_image(shard["name"], record, r)
            totals.total.add(r.total)
            for cid, t in r.per_category.items():
                totals.per_category[cid].add(t)
            ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
            if region_scorer is not None and ext:
                pixels, _ = decode_image(sample.members[ext], source["max_image_pixels"], source["working_size"])
                region_scorer(pixels, image)
    t = totals.total
    report = {
        "output": output.uri, "iou_threshold": iou_threshold,
        "unknown_nouns": "wrong" if exhaustive else "skip",
        "images": counts["images"], "images_with_pairs": counts["images_with_pairs"],
        "images_not_in_ground_truth": counts["images_not_in_ground_truth"],
        "pairs": t.pairs + t.unjudged, "judged_pairs": t.pairs, "unjudged_pairs": t.unjudged,
        "correct_pairs": t.correct, "duplicate_pairs": t.duplicates,
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
