"""COCO-format ground truth, indexed the way mined records are found: by the image's `key` (what
img2dataset and the toy world write), else by its file name without extension."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from pycocotools import mask as mask_utils

from mining import masks
from mining.storage import Location, Where


@dataclass
class GroundTruth:
    categories: list[dict]
    images: dict[str, dict]               # key -> COCO image entry
    instances: dict[int, list[dict]]      # image id -> annotations (crowd regions left out)
    exhaustive: bool                      # every visible region is annotated (the toy world)

    def rles(self, image: dict) -> list[dict]:
        h, w = image["height"], image["width"]
        out = []
        for ann in self.instances.get(image["id"], []):
            seg = ann["segmentation"]
            if isinstance(seg, list):                                  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg["counts"], list):                      # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = masks.native(seg)
            out.append(rle)
        return out


def image_key(image: dict) -> str:
    return str(image.get("key") or PurePosixPath(image["file_name"]).stem)


# What the evaluator reads of each entry of a COCO instances file, so that a file that passes cannot fail later
# on a missing key. Checked in plain Python: jsonschema takes about a minute on 100k annotations.
_REQUIRED = {"images": (("id", int, "a whole number"), ("width", int, "a whole number"),
                        ("height", int, "a whole number")),
             "annotations": (("image_id", int, "a whole number"), ("category_id", int, "a whole number"),
                             ("segmentation", (list, dict), "polygons or an RLE")),
             "categories": (("id", int, "a whole number"), ("name", str, "a string"))}
_FIX = "expected COCO instances JSON (images, annotations, categories), e.g. a toy world's ground_truth.json"


def _entry_problem(section: str, index: int, entry: object) -> str | None:
    if not isinstance(entry, dict):
        return f"{section}[{index}] is not an object"
    for name, kind, expected in _REQUIRED[section]:
        if name not in entry:
            return f"{section}[{index}] has no {name!r}"
        if not isinstance(entry[name], kind) or isinstance(entry[name], bool):
            return f"{section}[{index}].{name} is {entry[name]!r}, expected {expected}"
    if section == "images" and not isinstance(entry.get("key") or entry.get("file_name"), (str, int)):
        return f"images[{index}] has neither a 'key' nor a 'file_name'"
    if section == "annotations" and isinstance(entry["segmentation"], dict) and \
            not {"size", "counts"} <= entry["segmentation"].keys():
        return f"annotations[{index}].segmentation is an RLE without 'size' and 'counts'"
    return None


def _format_problem(doc: object) -> str | None:
    """The first way `doc` is not COCO instances ground truth, in words, or None."""
    if not isinstance(doc, dict):
        return f"the top level is a JSON {type(doc).__name__}, not an object"
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        return f"no {', '.join(missing)}"
    for section in _REQUIRED:
        if not isinstance(doc[section], list):
            return f"{section} is not a list"
        for index, entry in enumerate(doc[section]):
            problem = _entry_problem(section, index, entry)
            if problem:
                return problem
    return None


def load_ground_truth(uri: Where) -> GroundTruth:
    try:
        raw = Location.of(uri).read()
    except FileNotFoundError:
        raise FileNotFoundError(f"ground truth not found: {uri}") from None
    except OSError as err:   # a directory, a permission: pyarrow's own words name the cause
        raise OSError(f"cannot read ground truth {uri}: {err}") from None
    try:
        doc = json.loads(raw)
    except ValueError as err:   # not JSON, or not UTF-8
        raise ValueError(f"{uri} is not JSON ({err}): {_FIX}") from None
    problem = _format_problem(doc)
    if problem:
        raise ValueError(f"{uri} is not COCO instances ground truth: {problem}; {_FIX}")
    instances: dict[int, list[dict]] = {}
    for ann in doc["annotations"]:
        if not ann.get("iscrowd", 0):
            instances.setdefault(ann["image_id"], []).append(ann)
    info = doc.get("info")
    return GroundTruth(categories=doc["categories"], images={image_key(im): im for im in doc["images"]},
                       instances=instances, exhaustive=isinstance(info, dict) and bool(info.get("exhaustive")))
