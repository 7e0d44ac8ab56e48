"""Learning from everything a mined record holds, not only its confident pairs: OpenSeg's region-word
grounding loss over every mask and every caption noun of an image.

A mined record keeps all of its image's teacher masks and all of its caption entities, paired or not (only
images with no pair at all are left out of an output: mine with `match.min_similarity=null
match.min_margin=null` so that nearly every image is kept, and filter the pairs at read time instead).

Loss (OpenSeg §3.2): for image i and caption j, each noun of j is aligned to i's masks by a softmax over the
masks of their similarities, and the image-caption score is the mean over j's nouns of those alignments,

    G(i, j) = 1/|N_j| * sum_{w in N_j} sum_r softmax_r(s * <w, r>) * <w, r>,

then cross-entropy over the batch both ways (each image against every caption, each caption against every
image), at the model's logit scale s. A noun is grounded by contrast: a triangle mask must be nearer
"triangle" in the images whose captions say so than the grass they share with every other image.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mining.logs import logger
from mining.sinks.images import stream_images
from mining.sinks.reader import read_shard_records
from mining.train.data import CropSpec, DataCounts, ExampleStream, PairFilter, ShardSource


@dataclass
class ImageExample:
    pixels: torch.Tensor      # float[M, 3, S, S], normalised crops of the image's masks
    nouns: list[str]          # the caption nouns (unique, in the vocabulary)
    stem: str
    key: str


def record_nouns(record, filters: PairFilter) -> list[str]:
    """The record's entity nouns that the noun filters allow, each once, in caption order."""
    nouns = [e.noun for e in record.entities
             if (filters.allow is None or e.noun in filters.allow) and e.noun not in filters.deny]
    return list(dict.fromkeys(nouns))


def scan_entity_nouns(sources: list[ShardSource], filters: PairFilter) -> set[str]:
    """Every caption noun of every record (the grounding loss's vocabulary), from the records alone."""
    nouns: set[str] = set()
    for src in sources:
        for record in read_shard_records(src.shard):
            nouns.update(record_nouns(record, filters))
    return nouns


def shard_images(src: ShardSource, manifest: dict, filters: PairFilter, crop: CropSpec, counts: DataCounts,
                 max_masks: int) -> Iterator[ImageExample]:
    """One ImageExample per record with at least one noun and one usable mask; a picture that cannot be read
    again is skipped and counted (`missing_image`, per record here)."""
    wanted = []
    for record in read_shard_records(src.shard):
        counts.records += 1
        nouns = record_nouns(record, filters)
        if nouns and record.masks:
            wanted.append((record, nouns))
    if not wanted:
        return
    pictures = stream_images(src.output, manifest, src.stem, [r.key for r, _ in wanted])
    for (record, nouns), (_, image) in zip(wanted, pictures):
        if image is None:
            counts.missing_image += 1
            logger.warning("%s: picture of %r could not be read again; image skipped", src.shard, record.key)
            continue
        # the teacher's best masks first (records keep the teacher's order, but do not rely on it)
        order = sorted(range(len(record.masks)), key=lambda i: -record.masks[i].score)
        masks = []
        for i in order:
            mask = record.masks[i].decode()
            if mask.shape != image.shape[:2] or not mask.any():
                counts.bad_mask += 1
                continue
            masks.append(mask)
            if len(masks) == max_masks:
                break
        if not masks:
            continue
        counts.examples += 1
        yield ImageExample(crop(image, np.stack(masks)), nouns, src.stem, record.key)


class ImageStream(ExampleStream):
    """A worker's images (all masks, all nouns), shuffled and repeated like ExampleStream's crops."""

    def __init__(self, sources: list[ShardSource], filters: PairFilter, crop: CropSpec, max_masks: int,
                 rank: int = 0, world: int = 1, seed: int = 0, shuffle_buffer: int = 64) -> None:
        super().__init__(sources, filters, crop, rank, world, seed, shuffle_buffer)
        self.max_masks = max_masks

    def shard_items(self, src: ShardSource, counts: DataCounts) -> Iterator[ImageExample]:
        return shard_images(src, self._manifest(src.output), self.filters, self.crop, counts, self.max_masks)


def alignment_scores(regions: list[torch.Tensor], text: torch.Tensor, scale: float) -> torch.Tensor:
    """float[B, V]: how well each vocabulary word aligns with image b, sum_r softmax_r(s<w,r>) <w,r>, from
    the L2-normalised float[M_b, D] region embeddings of each image and float[V, D] text embeddings."""
    rows = []
    for r in regions:
        sim = text @ r.T                                    # [V, M_b]
        rows.append((F.softmax(scale * sim, dim=1) * sim).sum(1))
    return torch.stack(rows)


def grounding_loss(regions: list[torch.Tensor], words: torch.Tensor, text: torch.Tensor,
                   scale: float | torch.Tensor) -> torch.Tensor:
    """OpenSeg's grounding loss. words: float[B, V], row j the caption's nouns (a multi-hot row, each row
    summing to 1 over its nouns), so G = alignment @ words.T averages the alignments over caption j's nouns;
    captions with the same nouns share the target."""
    g = alignment_scores(regions, text, scale) @ words.T     # [B images, B captions]
    # captions naming the same nouns are all right for an image (a small vocabulary repeats them often)
    same = (torch.cdist(words, words) < 1e-6).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(scale * g, target) + F.cross_entropy(scale * g.T, target))


def noun_rows(nouns: list[list[str]], index: dict[str, int], device: torch.device,
              keep: float = 1.0) -> torch.Tensor:
    """float[B, V] rows of `grounding_loss`'s `words` for a batch of images, from each image's caption nouns.
    With `keep` < 1 each noun stays with that probability, at least one per caption (OpenSeg's word dropping;
    drawn from torch's generator, which checkpoints carry)."""
    words = torch.zeros(len(nouns), len(index), device=device)
    for j, caption in enumerate(nouns):
        ids = [index[n] for n in caption if n in index]
        if keep < 1 and len(ids) > 1:
            kept = [i for i, draw in zip(ids, torch.rand(len(ids)).tolist()) if draw < keep]
            ids = kept or [ids[int(torch.randint(len(ids), (1,)))]]
        words[j, ids] = 1.0 / len(ids)
    return words


MAX_LOG_SCALE = math.log(100.0)   # CLIP's own bound on its logit scale


class ScaledTower(torch.nn.Module):
    """The tower a phase trains with the grounding loss's learnable temperature beside it (OpenSeg's τ, here its
    inverse, kept as a log): one module, so one optimizer, one DDP wrapper and one gradient all-reduce carry both.
    Calling it calls the tower."""

    def __init__(self, tower: torch.nn.Module, log_scale: torch.nn.Parameter) -> None:
        super().__init__()
        self.tower, self.log_scale = tower, log_scale

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tower(pixels)

    def scale(self) -> torch.Tensor:
        return temperature_scale(self.log_scale)


def temperature_scale(log_scale: torch.Tensor) -> torch.Tensor:
    """The scale the loss multiplies similarities by: exp(log), held in [1, 100] as CLIP holds its own."""
    return log_scale.clamp(0.0, MAX_LOG_SCALE).exp()
