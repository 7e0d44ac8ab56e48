"""The in-memory records that flow between stages, and the named reasons a sample can be dropped.

A `Sample` is created by the shard reader and filled in stage by stage; heavy fields (image, dense masks,
embeddings) are released by the stage that last needs them so that what travels between Ray actors stays
small. Every sample ends in exactly one state: kept (it has pairs) or dropped with one reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np


class Drop(str, Enum):
    """Why a sample produced no pairs. The value is what the manifest counts."""

    MISSING_IMAGE = "missing_image"          # a key with a caption but no image member
    EMPTY_IMAGE = "empty_image"              # zero-byte image member
    DECODE_ERROR = "decode_error"            # corrupt or truncated image bytes
    IMAGE_TOO_LARGE = "image_too_large"      # decompression-bomb guard
    TRUNCATED_TAR = "truncated_tar"          # a member cut off by a truncated tar
    NO_CAPTION = "no_caption"                # missing or empty caption
    CAPTION_NOT_UTF8 = "caption_not_utf8"    # caption bytes that are not UTF-8 (and no other caption)
    NO_ENTITIES = "no_entities"              # the captions name nothing visual
    NO_MASKS = "no_masks"                    # the teacher found nothing that passed its filters
    NO_CONFIDENT_PAIR = "no_confident_pair"  # matching kept no pair
    STAGE_ERROR = "stage_error"              # a stage raised on this one sample
    DUPLICATE_KEY = "duplicate_key"          # a key met again later in the tar: the first sample is kept


# where a caption came from (`Sample.caption_sources`): the image's own, or written by captions.refine's model
ORIGINAL, REFINED = "original", "refined"


@dataclass
class Entity:
    """A visual noun of a caption. `noun` is the singular lemma that is matched; `phrase` keeps adjectives."""

    noun: str
    phrase: str
    span: tuple[int, int]          # character offsets of the phrase in its caption
    caption_index: int
    adjectives: list[str] = field(default_factory=list)
    count: int = 1                 # instances the caption counts: "two red circles" -> 2
    mentions: list[int] = field(default_factory=list)   # every caption naming it (in memory, for matching)

    def captions(self) -> list[int]:
        return self.mentions or [self.caption_index]

    def to_json(self) -> dict[str, Any]:
        doc = {"noun": self.noun, "phrase": self.phrase, "span": list(self.span),
               "caption_index": self.caption_index, "adjectives": list(self.adjectives)}
        return doc | ({"count": self.count} if self.count > 1 else {})


@dataclass
class Pair:
    mask_index: int
    entity_index: int
    similarity: float              # fused cosine similarity (mean over scales)
    margin: float | None           # regret: rise of the best assignment's cost without this pair; None: no rival
    probability: float | None      # softmax over the entity's candidate masks; None: the only candidate
    scale_similarities: list[float]


@dataclass
class Sample:
    shard: str                     # input shard URI
    shard_stem: str                # output name of the shard
    key: str
    index: int                     # position within the shard
    shard_size: int = 0            # samples the reader found in this shard; set once the shard is read
    members: dict[str, bytes] = field(default_factory=dict)   # raw tar members by extension
    shard_errors: list[str] = field(default_factory=list)     # shard-level problems, on the last sample
    sentinel: bool = False         # stands in for a shard that yielded no sample at all
    read_error: str | None = None  # on a sentinel: the shard could not be read (not committed; a rerun retries)
    captions: list[str] = field(default_factory=list)
    caption_sources: list[str] = field(default_factory=list)   # per caption, ORIGINAL or REFINED; empty: all ORIGINAL
    image: np.ndarray | None = None                # uint8[H, W, 3], working frame
    orig_size: tuple[int, int] | None = None       # (width, height) as stored, after EXIF rotation
    frame_size: tuple[int, int] | None = None      # (width, height) of the working frame masks live in
    entities: list[Entity] = field(default_factory=list)
    entity_fallbacks: dict[str, int] = field(default_factory=dict)   # captions whose LLM answer went unused, by why
    masks: np.ndarray | None = None                # bool[N, H, W], working frame
    mask_scores: np.ndarray | None = None          # float32[N]
    region_embeddings: list[np.ndarray] | None = None   # per scale: float32[N, D], L2-normalised
    entity_embeddings: np.ndarray | None = None          # float32[E, D], L2-normalised
    logit_scale: float = 100.0                     # the region model's, for the match probability
    pairs: list[Pair] = field(default_factory=list)
    rles: list[dict[str, Any]] = field(default_factory=list)    # COCO RLE (JSON) of each mask, from the teacher
    image_bytes: bytes | None = None               # encoded decoded image, only when output.write_images
    drop: Drop | None = None
    drop_detail: str | None = None
    timings: dict[str, float] = field(default_factory=dict)    # seconds spent on this sample per stage

    def add_caption(self, text: str, source: str) -> None:
        """Append a caption with its provenance (the captions before it, if unmarked, are the image's own)."""
        self.caption_sources = self.caption_sources or [ORIGINAL] * len(self.captions)
        self.captions.append(text)
        self.caption_sources.append(source)

    @property
    def alive(self) -> bool:
        return self.drop is None and not self.sentinel

    def drop_with(self, reason: Drop, detail: str | None = None) -> "Sample":
        self.drop = reason
        self.drop_detail = detail
        self.release_heavy()
        self.members = {}
        return self

    def release_heavy(self) -> None:
        self.image = None
        self.masks = None
        self.region_embeddings = None
        self.entity_embeddings = None


@dataclass
class ShardChunk:
    """Consecutive samples of one input shard: the unit that flows through the stages and is written. A shard
    larger than `execution.chunk_size` travels as several chunks (`part` of `parts`), which the write step
    joins back into one output shard."""
    uri: str                        # the input shard
    stem: str                       # its output name
    limit: int | None               # the --limit cut of this shard, if any (recorded in its marker)
    part: int
    parts: int
    samples: list[Sample]
    started: float                  # epoch seconds the shard's read began
    stamps: dict[str, float] = field(default_factory=dict)   # executor-private: model stages' setup figures
