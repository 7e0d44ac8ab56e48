"""Mined outputs as segmentation targets: per image, the picture and the masks of its kept pairs with their
nouns. Built on `mining.train.data`'s reader pieces (shard sources, worker split, pair filters, shuffle buffer,
counts) and the same picture re-read path (`stream_images`), so Model A and Model B read outputs alike."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from mining.sinks.reader import read_shard_records
from mining.train.data import DataCounts, EpochStream, PairFilter, ShardSource, records_with_pictures
from mining.train.grounding import record_nouns


@dataclass
class ImageTargets:
    image: np.ndarray         # uint8[H, W, 3], the record's working frame
    masks: np.ndarray         # bool[N, H, W]; N may be 0 for an image taken for its caption nouns alone
    nouns: list[str]          # N nouns, one per mask
    stem: str
    key: str
    caption_nouns: list[str] = field(default_factory=list)   # every noun of its captions (the filters allow)


def shard_targets(src: ShardSource, manifest: dict, filters: PairFilter, counts: DataCounts,
                  grounding: bool = False) -> Iterator[ImageTargets]:
    """One shard's images with kept pairs, in record order; with `grounding`, also the images whose captions
    name a noun but which keep no pair, and every image's caption nouns. A (mask, noun) named twice (two
    captions) is one target; a picture that cannot be read again is skipped and its pairs counted as
    `missing_image`."""
    unpaired = (lambda record: bool(record_nouns(record, filters))) if grounding else None
    for record, kept, image in records_with_pictures(src, manifest, filters, counts, unpaired):
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
        words = record_nouns(record, filters) if grounding else []
        if masks or words:
            counts.examples += 1
            stacked = np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), bool)
            yield ImageTargets(image, stacked, nouns, src.stem, record.key, words)


class TargetStream(EpochStream):
    """The images of one worker's shards with their targets, shuffled and repeated like
    `mining.train.data.ExampleStream`'s crops (the same epochs, positions and resume)."""

    def __init__(self, sources: list[ShardSource], filters: PairFilter, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle_buffer: int = 64, grounding: bool = False) -> None:
        super().__init__(sources, rank, world, seed, shuffle_buffer, what="image with a usable pair")
        self.filters, self.grounding = filters, grounding

    def shard_items(self, src: ShardSource, counts) -> Iterator[ImageTargets]:
        return shard_targets(src, self._manifest(src.output), self.filters, counts, self.grounding)


def count_images_with_pairs(sources: list[ShardSource], filters: PairFilter, grounding: bool = False) -> int:
    """Images with at least one kept pair (with `grounding`, or a caption noun), from the records alone (no
    pictures): what an epoch is."""
    return sum(any(filters.keep(p) for p in record.pairs) or (grounding and bool(record_nouns(record, filters)))
               for src in sources for record in read_shard_records(src.shard))
