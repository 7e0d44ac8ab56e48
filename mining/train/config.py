"""Typed training configuration (`ovmine train clip --config FILE`): YAML in, validated before any work.

Every section forbids unknown keys, so a typo fails at load time naming the dotted field, as the mining
config does (the loader's helpers are shared with `mining.config`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mining.config import RegionsConfig, StorageConfig, _Section, read_config_file, validated


class TrainFilters(_Section):
    """Read-time filters on the mined pairs (a curated copy is not needed for these)."""
    min_similarity: float | None = Field(None, ge=-1, le=1, description="keep pairs at or above; null: off")
    min_margin: float | None = Field(
        None, ge=0, le=2, description="keep pairs at or above; a pair with no rival (margin null) passes; null: off")
    nouns_allow: list[str] | None = Field(None, description="only these nouns; null: every noun")
    nouns_deny: list[str] = Field(default_factory=list, description="never these nouns")


class MaskPromptConfig(_Section):
    """Mask prompt tuning (OVSeg §3.3): learnable tokens replace the tokens of fully masked-out patches of a ViT
    tower, in its first `depth` layers; every CLIP weight stays frozen."""
    depth: int = Field(3, ge=1, description="layers whose masked-out tokens are replaced (OVSeg: 3, deep prompts)")
    lr: float = Field(2e-2, gt=0, description="peak learning rate of the prompts (OVSeg: 2e-2)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the prompts (OVSeg: 0)")
    steps: int | None = Field(None, ge=1, description="method ft+mpt: steps of the MPT phase; null: as many as "
                                                      "the FT phase (method mpt: `steps`/`epochs` say how long)")
    init_std: float = Field(0.02, ge=0, description="prompts start as N(0, init_std) (OVSeg: random)")


class GroundingConfig(_Section):
    """OpenSeg's region-word grounding loss over every mask and every caption noun of an image: weak
    supervision that needs no pair, so images whose pairs are missing or wrong still teach."""
    weight: float = Field(0.0, ge=0, description="weight of the grounding loss; 0: off (pairs only)")
    images: int = Field(16, ge=2, description="images per micro-batch per worker (the other images' captions are "
                                               "the negatives)")
    max_masks: int = Field(16, ge=1, description="masks of an image used, the teacher's best first")
    shuffle_buffer: int = Field(64, ge=1, description="images held for shuffling, per worker")
    # learn_scale and word_keep are off by default: neither helped on the toy world (README, bench/things.py)
    learn_scale: bool = Field(False, description="learn the loss's temperature (OpenSeg's τ), starting at the "
                                                 "model's logit scale; false: keep the model's")
    scale_lr: float = Field(1e-2, gt=0, description="learning rate of the temperature's log (learn_scale)")
    word_keep: float = Field(1.0, gt=0, le=1, description="keep each caption noun with this probability at "
                                                        "train time, at least one (OpenSeg's kp: 0.5-0.75 best)")


class TrainingRun(_Section):
    """What both trainers share: how long, where and on what they run, checkpoints, metrics, read-time filters."""
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    steps: int | None = Field(None, ge=1, description="optimizer steps; set this or epochs")
    epochs: float | None = Field(None, gt=0, description="passes over the (filtered) training data; set this or steps")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up, then cosine decay to 0")
    workers: int = Field(1, ge=1, description="data-parallel workers (Ray executor; local runs one)")
    use_gpu: bool = Field(False, description="one GPU per worker (Ray executor); local: CUDA when available")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints (Ray executor), and the last")
    max_failures: int = Field(0, ge=0, description="Ray FailureConfig: restarts from the latest checkpoint")
    storage_path: str | None = Field(None, description="Ray Train storage (local or s3://); null: OUTPUT/_ray")
    log_every: int = Field(10, ge=1, description="steps between metrics.jsonl lines")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; null: off")
    precision: Literal["auto", "fp32", "tf32", "bf16"] = Field(
        "auto", description="forward passes in fp32, tf32 (CUDA) or under bf16 autocast (fp16 would need loss "
                            "scaling); auto: bf16 on CUDA, fp32 on the CPU")
    filters: TrainFilters = Field(default_factory=TrainFilters)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "bf16" in data:
            raise ValueError("bf16 is now precision (auto|fp32|tf32|bf16; bf16: true was auto)")
        return data

    @model_validator(mode="after")
    def _one_length(self) -> "TrainingRun":
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"set steps ({self.steps}) or epochs ({self.epochs}), not both")
        if self.steps is None and self.epochs is None:
            raise ValueError("set steps or epochs (how long to train)")
        return self

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def known_regions_fields(section: str, value: dict[str, Any]) -> None:
    """A section that holds `regions.*` settings (the CLIP to train or to embed class names with) names only
    fields RegionsConfig knows."""
    unknown = sorted(set(value) - set(RegionsConfig.model_fields))
    if unknown:
        raise ValueError(f"{section}: unknown field(s) {unknown} (known: {sorted(RegionsConfig.model_fields)})")


class TrainConfig(TrainingRun):
    """Model A: OVSeg's mask-adapted CLIP. The image tower is fine-tuned on masked crops of mined pairs (FT),
    or mask prompts are tuned with CLIP frozen (MPT), or FT then MPT; the text tower and the logit scale stay
    frozen (OVSeg §3.3). Optionally OpenSeg's grounding loss adds every mask and noun of every image."""
    method: Literal["ft", "mpt", "ft+mpt"] = Field(
        "ft", description="ft: fine-tune the image tower; mpt: mask prompts only (ViT towers); ft+mpt: FT, then "
                          "MPT on the fine-tuned tower (OVSeg's best)")
    mpt: MaskPromptConfig = Field(default_factory=MaskPromptConfig)
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)
    pair_weight: float = Field(1.0, ge=0, description="weight of the pairs' cross-entropy; 0: grounding only")
    regions: dict[str, Any] = Field(
        default_factory=dict,
        description="fields of the mined run's own `regions` config to replace (the model to start from, e.g. "
                    "{model: ViT-B-16, pretrained: openai}); empty: adapt the very model that mined the data")
    crop_context: float | None = Field(None, ge=1.0, le=4.0,
                                       description="box growth of the crops; null: the run's regions.crop_context[0]")
    crop_fit: Literal["pad", "stretch"] | None = Field(None, description="null: the run's regions.crop_fit")
    lr: float = Field(5e-6, gt=0, description="peak learning rate (OVSeg FT: 5e-6)")
    weight_decay: float = Field(0.2, ge=0, description="AdamW weight decay of weights, not of biases and norms")
    batch_size: int = Field(32, ge=1, description="crops per micro-batch per worker; one optimizer step sees "
                                                  "batch_size * grad_accum * workers crops")
    seed: int = Field(0, description="shuffling and anything random in training")
    shuffle_buffer: int = Field(256, ge=1, description="crops held for shuffling, per worker")
    save_dtype: Literal["float32", "float16"] = "float32"
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; null: off (OVSeg clips none)")
    wise_ft: float = Field(
        1.0, gt=0, le=1,
        description="WiSE-FT's alpha (Wortsman et al., 2022): the saved image tower is alpha x the trained weights + "
                    "(1 - alpha) x the starting ones, which keeps what the starting CLIP knew of names the mined "
                    "data lacks; 1: the trained tower. Applied when the folder is written: a rerun with another "
                    "value rewrites the folder from the last checkpoint without training again")

    @model_validator(mode="after")
    def _some_loss(self) -> "TrainConfig":
        if self.pair_weight == 0 and self.grounding.weight == 0:
            raise ValueError("pair_weight and grounding.weight are both 0: nothing to learn from")
        return self

    @model_validator(mode="after")
    def _regions_fields(self) -> "TrainConfig":
        known_regions_fields("regions", self.regions)
        return self


def build_train_config(tree: dict[str, Any] | None = None, overrides: list[str] | None = None,
                       origin: str = "<dict>") -> TrainConfig:
    return validated(TrainConfig, tree, overrides, origin)


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    tree = {} if path is None else read_config_file(path, what="training config")
    return build_train_config(tree, overrides, origin=str(path) if path else "<defaults>")
