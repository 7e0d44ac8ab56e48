"""Scenes of the toy world held in memory for training (the shipped models never see the demo's seeds)."""
from __future__ import annotations

from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from mining.toyworld.make import iter_world

TRAIN_SEED = 7_000_003   # the demo, tests and bench use small seeds; training draws from far away


def _render_block(args: tuple[int, int, int, int, bool]):
    seed, shard, per_shard, size, with_masks = args
    images, captions, masks = [], [], []
    for _, _, scene, caps in iter_world(seed, shard + 1, per_shard, size, first_shard=shard):
        images.append(scene.image)
        captions.append(caps)
        if with_masks:
            masks.append(np.stack([i.mask for i in scene.things + scene.stuff]))
    return np.stack(images), captions, masks


def render_training_set(count: int, size: int = 128, seed: int = TRAIN_SEED, with_masks: bool = False,
                        workers: int = 2) -> tuple[np.ndarray, list[list[str]], list[np.ndarray]]:
    """`count` scenes as uint8[count, size, size, 3], their two captions, and (optionally) their
    ground-truth masks (things then stuff, bool[n, size, size])."""
    per_block = 250
    blocks = [(seed, b, per_block, size, with_masks) for b in range(-(-count // per_block))]
    images, captions, masks = [], [], []
    with get_context("spawn").Pool(workers) as pool:
        for im, caps, ms in tqdm(pool.imap(_render_block, blocks), total=len(blocks), desc="render", unit="block"):
            images.append(im)
            captions.extend(caps)
            masks.extend(ms)
    return np.concatenate(images)[:count], captions[:count], masks[:count]
