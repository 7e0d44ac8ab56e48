"""Mined outputs as segmentation targets: per image, the picture and the masks of its kept pairs with their
nouns. Built on `mining.train.data`'s reader pieces (shard sources, worker split, pair filters, shuffle buffer,
counts) and the same picture re-read path (`stream_images`), so Model A and Model B read outputs alike."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mining.sinks.reader import read_shard_records
from mining.storage import Location
from mining.train.data import (DataCounts, NoTrainingData, PairFilter, ShardSource, ShuffleBuffer, output_manifest,
                               records_with_pictures, worker_shards)



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


class TargetStream:
    """The images of one worker's shards, shuffled; `forever(start)` repeats them, reshuffled per epoch.
    Deterministic given (seed, worker, epoch), as `mining.train.data.ExampleStream`."""

    def __init__(self, sources: list[ShardSource], filters: PairFilter, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle_buffer: int = 64) -> None:
        self.shards = worker_shards(sources, rank, world)
        if not self.shards:
            raise NoTrainingData(f"worker {rank} of {world} has no shard: {len(sources)} shard(s) for {world} "
                                 f"workers; use at most {len(sources)} workers")
        self.filters, self.rank, self.seed = filters, rank, seed
        self.shuffle_buffer = shuffle_buffer
        self.manifests: dict[Location, dict] = {}
        self.counts = DataCounts()   # examples = images with targets
        self.passes = 0

    def _manifest(self, output: Location) -> dict:
        if output not in self.manifests:
            self.manifests[output] = output_manifest(output)
        return self.manifests[output]

    def epoch(self, epoch: int = 0) -> Iterator[ImageTargets]:
        rng = np.random.default_rng([self.seed, self.rank, epoch])
        order = [self.shards[i] for i in rng.permutation(len(self.shards))]

        def targets() -> Iterator[ImageTargets]:
            for src in order:
                yield from shard_targets(src, self._manifest(src.output), self.filters, self.counts)

        yield from ShuffleBuffer(self.shuffle_buffer, rng)(targets())
        self.passes += 1

    def forever(self, start_epoch: int = 0) -> Iterator[ImageTargets]:
        epoch = start_epoch
        while True:
            produced = False
            for item in self.epoch(epoch):
                produced = True
                yield item
            if not produced:
                raise NoTrainingData(f"worker {self.rank}: its shards ({', '.join(s.shard.uri for s in self.shards)}) "
                                     f"gave no image with a usable pair (pictures missing? see the counts)")
            epoch += 1


def count_images_with_pairs(sources: list[ShardSource], filters: PairFilter) -> int:
    """Images with at least one kept pair, from the records alone (no pictures): what an epoch is."""
    return sum(any(filters.keep(p) for p in record.pairs)
               for src in sources for record in read_shard_records(src.shard))
