"""Scenes of the toy world held in memory for training (the shipped models never see the demo's seeds)."""
from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from mining.toyworld.make import iter_world

TRAIN_SEED = 7_000_003   # the demo, tests and bench use small seeds; training draws from far away


@dataclass
class TrainingSet:
    images: np.ndarray              # uint8[count, size, size, 3]
    captions: list[list[str]]       # two per image
    grounds: list[str]              # the ground stuff of each image
    masks: list[np.ndarray]         # ground-truth masks (things then stuff), bool[n, size, size]; if asked
    colours: list[str | None] = field(default_factory=list)   # the colour of each image's biggest thing
    subjects: list[tuple[str, str, str] | None] = field(default_factory=list)   # its (size, colour, category)


def _render_block(args: tuple[int, int, int, int, bool, float, float]):
    seed, shard, per_shard, size, with_masks, closeup_rate, plain_rate = args
    out = TrainingSet([], [], [], [])
    for _, _, scene, caps in iter_world(seed, shard + 1, per_shard, size, first_shard=shard,
                                        closeup_rate=closeup_rate, plain_rate=plain_rate):
        out.images.append(scene.image)
        out.captions.append(caps)
        out.grounds.append(scene.ground)
        biggest = max(scene.things, key=lambda i: i.mask.sum()) if scene.things else None
        out.colours.append(biggest.colour if biggest else None)
        out.subjects.append((biggest.size_word or "medium", biggest.colour, biggest.category.name) if biggest else None)
        if with_masks:
            out.masks.append(np.stack([i.mask for i in scene.things + scene.stuff]))
    return out


def render_training_set(count: int, size: int = 128, seed: int = TRAIN_SEED, with_masks: bool = False,
                        closeup_rate: float = 0.2, plain_rate: float = 0.0, workers: int = 2) -> TrainingSet:
    per_block = 250
    blocks = [(seed, b, per_block, size, with_masks, closeup_rate, plain_rate)
              for b in range(-(-count // per_block))]
    parts = []
    with get_context("spawn").Pool(workers) as pool:
        for part in tqdm(pool.imap(_render_block, blocks), total=len(blocks), desc="render", unit="block"):
            parts.append(part)
    return TrainingSet(np.stack([im for p in parts for im in p.images])[:count],
                       [c for p in parts for c in p.captions][:count], [g for p in parts for g in p.grounds][:count],
                       [m for p in parts for m in p.masks][:count], [c for p in parts for c in p.colours][:count],
                       [s for p in parts for s in p.subjects][:count])
