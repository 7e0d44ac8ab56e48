"""Typed configuration of Model B, the open-vocabulary segmenter (`ovmine train segmenter --config FILE`).

Every section forbids unknown keys, so a typo fails at load time naming the dotted field, as the mining and
CLIP-training configs do (the loader's helpers are shared with `mining.config`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from mining.config import read_config_file, validated
from mining.train.config import TrainingRun, known_regions_fields


class SegmenterConfig(TrainingRun):
    """A Mask2Former (the teacher's architecture and weights) whose class head is a projection into CLIP's text
    space: a query's class is its cosine with the frozen text embeddings of the class names, or a learned
    "no object" embedding, times `logit_scale`. Trained with transformers' Mask2Former Hungarian losses (mask
    BCE + Dice on matched queries, cross-entropy over the vocabulary + no object)."""
    teacher: str | None = Field(
        None, description="transformers Mask2Former folder or hub id to start from; null: the mined run's own "
                          "teacher.mask2former.model")
    clip: dict[str, Any] = Field(
        default_factory=dict,
        description="fields of the mined run's `regions` config to replace for the CLIP whose (frozen) text "
                    "tower embeds class names, e.g. {model: ViT-L-14, pretrained: openai}; empty: the run's CLIP")
    logit_scale: float = Field(50.0, gt=0, le=200, description="cosine -> logit factor (1 / temperature)")
    lr: float = Field(1e-4, gt=0, description="peak learning rate of the decoder, pixel decoder and head")
    backbone_lr_mult: float = Field(0.1, ge=0, le=1, description="backbone lr = lr x this (Mask2Former: 0.1)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay of weights, not of biases and norms")
    batch_size: int = Field(8, ge=1, description="images per micro-batch per worker")
    class_weight: float = Field(2.0, ge=0, description="cross-entropy weight (Mask2Former: 2)")
    mask_weight: float = Field(5.0, ge=0, description="mask BCE weight (Mask2Former: 5)")
    dice_weight: float = Field(5.0, ge=0, description="Dice weight (Mask2Former: 5)")
    no_object_weight: float = Field(0.1, ge=0, le=1, description="cross-entropy weight of the no-object class")
    train_num_points: int | None = Field(None, ge=16, description="points sampled per mask in the loss; null: "
                                                                   "the teacher's config")
    hflip: bool = Field(True, description="random horizontal flips (image and masks together)")
    grounding_weight: float = Field(
        0.0, ge=0, description="OpenSeg's grounding loss on the segmenter itself: every query of every image "
                               "against every noun of its captions (`mining.train.grounding`), so images and nouns "
                               "without a kept pair teach too; an image with no kept pair is then trained by this "
                               "loss alone. 0: off")
    seed: int = Field(0, description="shuffling, flips and anything random in training")
    shuffle_buffer: int = Field(64, ge=1, description="images held for shuffling, per worker")

    @model_validator(mode="after")
    def _clip_fields(self) -> "SegmenterConfig":
        known_regions_fields("clip", self.clip)
        return self


def build_segmenter_config(tree: dict[str, Any] | None = None, overrides: list[str] | None = None,
                           origin: str = "<dict>") -> SegmenterConfig:
    return validated(SegmenterConfig, tree, overrides, origin)


def load_segmenter_config(path: str | Path | None, overrides: list[str] | None = None) -> SegmenterConfig:
    tree = {} if path is None else read_config_file(path, what="segmenter training config")
    return build_segmenter_config(tree, overrides, origin=str(path) if path else "<defaults>")
