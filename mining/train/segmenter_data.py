"""Mined outputs as segmentation targets: per image, the picture and the masks of its kept pairs with their
nouns. Built on `mining.train.data`'s reader pieces (shard sources, worker split, pair filters, shuffle buffer,
counts) and the same picture re-read path (`stream_images`), so Model A and Model B read outputs alike."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mining.sinks.reader import read_shard_records
from mining.train.data import (DataCounts, EpochStream, PairFilter, ShardSource, records_with_pictures)



@dataclass
class ImageTargets:
    image: np.ndarray         # uint8[H, W, 3], the record's working frame
    masks: np.ndarray         # bool[N, H, W]
    nouns: list[str]          # N nouns, one per mask
    stem: str
    key: str


def shard_targets(src: ShardSource, manifest: dict, filters: PairFilter,
                  counts: DataCounts) -> Iterator[ImageTargets]:
    """One shard's images with kept pairs, in record order. A (mask, noun) named twice (two captions) is one
    target; a picture that cannot be read again is skipped and its pairs counted as `missing_image`."""
    for record, kept, image in records_with_pictures(src, manifest, filters, counts):
        masks, nouns, seen = [], [], set()
        for pair in kept:
            if (pair.mask_index, pair.noun) in seen:
                continue
            seen.add((pair.mask_index, pair.noun))
            mask = record.masks[pair.mask_index].decode()
            if mask.shape != image.shape[:2] or not mask.any():
                counts.bad_mask += 1
                continue
            masks.append(mask)
            nouns.append(pair.noun)
        if masks:
            counts.examples += 1
            yield ImageTargets(image, np.stack(masks), nouns, src.stem, record.key)


class TargetStream(EpochStream):
    """The images of one worker's shards with their targets, shuffled and repeated like
    `mining.train.data.ExampleStream`'s crops (the same epochs, positions and resume)."""

    def __init__(self, sources: list[ShardSource], filters: PairFilter, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle_buffer: int = 64) -> None:
        super().__init__(sources, rank, world, seed, shuffle_buffer, what="image with a usable pair")
        self.filters = filters

    def shard_items(self, src: ShardSource, counts) -> Iterator[ImageTargets]:
        return shard_targets(src, self._manifest(src.output), self.filters, counts)


def count_images_with_pairs(sources: list[ShardSource], filters: PairFilter) -> int:
    """Images with at least one kept pair, from the records alone (no pictures): what an epoch is."""
    return sum(any(filters.keep(p) for p in record.pairs)
               for src in sources for record in read_shard_records(src.shard))
