"""The region encoder alone, scored as Uni-OVSeg's Table 4 does: classify every ground-truth mask against
all category names (the run's prompt templates, its scales fused by averaging similarities) and count top-1
hits. The masks are in the working frame the run used, so this scores exactly what mining embeds."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from mining.config import RunConfig
from mining.evaluation.ground_truth import GroundTruth
from mining import masks as rle_masks


class RegionTop1:
    def __init__(self, cfg: RunConfig, gt: GroundTruth) -> None:
        from mining.stages.regions import RegionStage   # torch and open_clip load only when asked for

        self.stage = RegionStage.from_config(cfg)
        self.stage.setup()
        self.gt = gt
        self.category_ids = [c["id"] for c in gt.categories]
        self.names = {c["id"]: c["name"] for c in gt.categories}
        self.text = self.stage.text([c["name"].replace("_", " ") for c in gt.categories])
        self.hits: Counter[int] = Counter()
        self.seen: Counter[int] = Counter()

    def __call__(self, pixels: np.ndarray, image: dict) -> None:
        anns = self.gt.instances.get(image["id"], [])
        if not anns:
            return
        h, w = pixels.shape[:2]
        masks = []
        for rle in self.gt.rles(image):
            masks.append(rle_masks.resize(rle_masks.decode(rle), h, w))
        keep = [i for i, m in enumerate(masks) if m.any()]
        if not keep:
            return
        per_scale = self.stage.region_embeddings(pixels, np.stack([masks[i] for i in keep]))
        similarity = np.mean([emb @ self.text.T for emb in per_scale], axis=0)
        predicted = similarity.argmax(1)
        for row, i in enumerate(keep):
            cid = anns[i]["category_id"]
            self.seen[cid] += 1
            self.hits[cid] += int(self.category_ids[predicted[row]] == cid)

    def to_json(self) -> dict[str, Any]:
        total = sum(self.seen.values())
        return {"masks": total, "top1": round(sum(self.hits.values()) / total, 4) if total else None,
                "chance": round(1 / len(self.category_ids), 4),
                "per_category": {self.names[c]: round(self.hits[c] / n, 4) for c, n in sorted(self.seen.items())}}
