"""The oracle: a world's ground truth written as if it had been mined. Every ground-truth mask becomes a pair
with its category's name, so training on it (`ovmine train clip --data ORACLE`) is the same training on perfect
masks and labels, the upper bound beside every result trained on mined pairs (issue 21).

    ovmine toyworld oracle WORLD OUTPUT     # WORLD as `ovmine toyworld make` wrote it

The output is a mining output in every respect (manifest, shards, markers; `validate` and `stats` read it) but
one: its pairs come from the ground truth, not from a teacher and CLIP (its manifest's config is the demo's, which
the trainer reads for the model to start from).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mining import masks as rle_masks
from mining.config import RunConfig
from mining.evaluation.ground_truth import load_ground_truth
from mining.records import Drop, Entity, Pair, Sample
from mining.stages.base import Stage


class GroundTruthPairs(Stage):
    """Stands in for the teacher, entities, regions and match stages: a sample's masks are its ground-truth
    masks in the working frame, its entities the names of their categories, each mask paired with its own."""
    name = "oracle"
    reads = ("image",)
    fills = ("entities", "rles", "pairs")

    def __init__(self, cfg: RunConfig, ground_truth: str) -> None:
        super().__init__(cfg.execution.match)
        self.ground_truth = ground_truth

    def setup(self) -> None:
        self.gt = load_ground_truth(self.ground_truth)
        self.names = {c["id"]: c["name"].replace("_", " ") for c in self.gt.categories}

    def process(self, samples: list[Sample]) -> None:
        for sample in samples:
            image = self.gt.images.get(sample.key)
            if image is None:
                sample.drop_with(Drop.NO_MASKS, "the ground truth has no such image")
                continue
            h, w = sample.image.shape[:2]
            anns = self.gt.instances.get(image["id"], [])
            framed = [rle_masks.resize(rle_masks.decode(rle), h, w) for rle in self.gt.rles(image)]
            keep = [i for i, m in enumerate(framed) if m.any()]
            if not keep:
                sample.drop_with(Drop.NO_MASKS, "no ground-truth mask survives the working frame")
                continue
            nouns = sorted({self.names[anns[i]["category_id"]] for i in keep})
            sample.entities = [Entity(n, n, (0, len(n)), 0) for n in nouns]
            sample.rles = rle_masks.encode_json(np.stack([framed[i] for i in keep]))
            sample.mask_scores = np.ones(len(keep), np.float32)
            sample.pairs = [Pair(row, nouns.index(self.names[anns[i]["category_id"]]), 1.0, None, None, [1.0])
                            for row, i in enumerate(keep)]
            sample.release_heavy()


def write_oracle(world: Path, output: str, overwrite: bool = False) -> dict[str, Any]:
    """Write `world`'s ground truth as a mining output at `output`; returns its manifest."""
    from mining.pipeline import run_mining
    from mining.stages.decode import DecodeStage
    from mining.toyworld.demo import demo_config

    cfg = demo_config(["execution.executor=local"])
    stages = [DecodeStage.from_config(cfg), GroundTruthPairs(cfg, str(world / "ground_truth.json"))]
    return run_mining(cfg, [str(world / "shards")], output, stages=stages, overwrite=overwrite)
