"""COCO-format ground truth, indexed the way mined records are found: by the image's `key` (what
img2dataset and the toy world write), else by its file name without extension."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from pycocotools import mask as mask_utils

from mining.storage import S3Options, read_bytes


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
                rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            out.append(rle)
        return out


def image_key(image: dict) -> str:
    return str(image.get("key") or PurePosixPath(image["file_name"]).stem)


def load_ground_truth(uri: str, s3: S3Options | None = None) -> GroundTruth:
    try:
        doc = json.loads(read_bytes(uri, s3))
    except FileNotFoundError:
        raise FileNotFoundError(f"ground truth not found: {uri}") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in doc]
    if missing:
        raise ValueError(f"{uri} is not COCO instances ground truth: no {', '.join(missing)}")
    instances: dict[int, list[dict]] = {}
    for ann in doc["annotations"]:
        if not ann.get("iscrowd", 0):
            instances.setdefault(ann["image_id"], []).append(ann)
    return GroundTruth(categories=doc["categories"], images={image_key(im): im for im in doc["images"]},
                       instances=instances, exhaustive=bool(doc.get("info", {}).get("exhaustive", False)))

