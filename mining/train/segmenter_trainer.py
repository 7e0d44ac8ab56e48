"""Training Model B, the open-vocabulary segmenter (`mining.train.segmenter`), on mined masks and nouns.

Each image's targets are the masks of its kept pairs, labelled with their nouns; the vocabulary is every kept
noun, embedded once by the (frozen) CLIP text tower with the run's templates, as Model A embeds it. The loss
is transformers' Mask2Former loss over that vocabulary. `train_loop` is shared by the in-process executor
(`run_local`) and Ray Train's workers (`mining.train.ray_train`), exactly as Model A's is.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from mining.config import RegionsConfig
from mining.devices import forward_precision, resolve_precision
from mining.logs import logger
from mining.regions.clip_loader import load_clip
from mining.sinks.guard import SEGMENTER
from mining.storage import Location, S3Options
from mining.train.checkpoints import restore_rng, rng_state, worker_resume
from mining.train import run
from mining.train.clip_trainer import _unwrap, accumulating, make_scheduler, resumed_stream, text_embeddings
from mining.train.data import PairFilter, ShardSource, scan_pairs
from mining.train.grounding import grounding_loss, noun_rows, scan_entity_nouns
from mining.train.segmenter import (META_FILE, OpenVocabSegmenter, build_segmenter, freeze_unused_parameters,
                                    make_criterion, masks_per_worker, save_segmenter, segmentation_loss)
from mining.train.run import Plan, ReportFn, StepLog, Trainer, TrainingData
from mining.train.segmenter_config import SegmenterConfig
from mining.train.segmenter_data import ImageTargets, TargetStream, count_images_with_pairs


@dataclass(kw_only=True)
class SegmenterPlan(Plan):
    """Model B's plan: the teacher and the CLIP whose text tower names classes, besides the common fields."""
    teacher: str                        # Mask2Former folder or hub id to start from
    clip: dict[str, Any]                # RegionsConfig of the CLIP whose text tower names classes
    config_class: ClassVar[type] = SegmenterConfig

    def clip_config(self) -> RegionsConfig:
        return RegionsConfig.model_validate(self.clip)


def make_plan(cfg: SegmenterConfig, outputs: list[str], workers: int | None = None) -> SegmenterPlan:
    """Read the outputs' manifests and records (no pictures): the teacher and CLIP to start from (the first
    output's, unless the config names them), the vocabulary and the number of steps."""
    data = TrainingData.read(outputs, S3Options.from_config(cfg.storage), workers)
    run_config = data.manifests[0]["config"]
    teacher = cfg.teacher
    if teacher is None:
        if run_config["teacher"]["kind"] != "mask2former":
            raise ValueError(f"{data.outputs[0]} was mined with teacher.kind={run_config['teacher']['kind']!r}, not "
                             f"a Mask2Former: name the Mask2Former to start from with --set teacher=PATH")
        teacher = run_config["teacher"]["mask2former"]["model"]
    clip = RegionsConfig.model_validate(run_config["regions"] | cfg.clip)
    filters = PairFilter.from_config(cfg.filters)
    vocabulary, counts = scan_pairs(data.sources, filters)
    grounding = cfg.grounding_weight > 0
    if grounding:   # the caption nouns no pair kept are words to ground (and classes to tell apart)
        vocabulary = sorted(set(vocabulary) | scan_entity_nouns(data.sources, filters))
    if cfg.steps is not None:
        steps = cfg.steps
    else:
        images = count_images_with_pairs(data.sources, filters, grounding)
        steps = max(1, math.ceil(cfg.epochs * images / (cfg.batch_size * cfg.grad_accum * (workers or 1))))
    return SegmenterPlan(cfg=cfg.resolved(), teacher=teacher, clip=clip.model_dump(mode="json"),
                         sources=[s.to_plan() for s in data.sources], vocabulary=vocabulary, total_steps=steps,
                         scan=counts.to_json())


def valid_size(pixel_mask: torch.Tensor | None, b: int, padded: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of image b's unpadded area in the processor's padded batch."""
    if pixel_mask is None:
        return padded
    return int(pixel_mask[b].any(1).sum()), int(pixel_mask[b].any(0).sum())


def prepare_batch(processor: Any, items: list[ImageTargets], vocabulary: dict[str, int], device: torch.device,
                  flips: list[bool] | None = None, grounding: bool = False):
    """pixel_values, pixel_mask, mask_labels (float[N, Hp, Wp] per image, in the padded input's frame, as the
    loss samples points over it), class_labels (long[N]) and, with `grounding`, the grounding loss's words
    (float[B, V], each image's caption nouns; None without)."""
    flips = flips or [False] * len(items)
    images = [np.ascontiguousarray(it.image[:, ::-1]) if f else it.image for it, f in zip(items, flips)]
    inputs = processor(images=images, return_tensors="pt")
    pixels, pixel_mask = inputs["pixel_values"], inputs.get("pixel_mask")
    padded = tuple(pixels.shape[-2:])
    mask_labels, class_labels = [], []
    for b, (it, f) in enumerate(zip(items, flips)):
        if not len(it.masks):   # an image taken for its caption nouns alone (grounding)
            mask_labels.append(torch.zeros((0, *padded), device=device))
            class_labels.append(torch.zeros(0, dtype=torch.long, device=device))
            continue
        masks = torch.from_numpy(np.ascontiguousarray(it.masks[:, :, ::-1] if f else it.masks)).float()
        h, w = valid_size(pixel_mask, b, padded)
        masks = F.interpolate(masks[None], size=(h, w), mode="nearest")[0]
        mask_labels.append(F.pad(masks, (0, padded[1] - w, 0, padded[0] - h)).to(device))
        class_labels.append(torch.tensor([vocabulary[n] for n in it.nouns], dtype=torch.long, device=device))
    words = noun_rows([it.caption_nouns for it in items], vocabulary, device) if grounding else None
    return (pixels.to(device), None if pixel_mask is None else pixel_mask.to(device), mask_labels, class_labels,
            words)


def make_optimizer(model: OpenVocabSegmenter, cfg: SegmenterConfig) -> torch.optim.Optimizer:
    """AdamW; the backbone at lr x backbone_lr_mult (Mask2Former's recipe); biases and norms never decay."""
    backbone = {id(p) for p in model.mask2former.model.pixel_level_module.encoder.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in backbone, p.ndim >= 2), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": cfg.lr * (cfg.backbone_lr_mult if in_backbone else 1.0),
                               "weight_decay": cfg.weight_decay if decays else 0.0}
                              for (in_backbone, decays), ps in sorted(groups.items())], lr=cfg.lr)


def batch_loss(model: torch.nn.Module, criterion: torch.nn.Module, batch: tuple, text: torch.Tensor,
               grounding_weight: float = 0.0, scale: float = 50.0, precision: str = "fp32") -> torch.Tensor:
    """The Mask2Former loss over the images with targets, plus `grounding_weight` x OpenSeg's grounding loss of
    every image's queries against its caption nouns (`words`, from prepare_batch). An image with no target is
    not pushed to "no object" everywhere: only the grounding loss sees it. The forward pass runs at `precision`
    (resolved)."""
    pixels, pixel_mask, mask_labels, class_labels, words = batch
    with forward_precision(pixels.device, precision):
        out = model(pixels, pixel_mask, text, queries=words is not None)
    classes, masks = out[0], out[1]
    paired = [b for b, labels in enumerate(class_labels) if len(labels)]
    if paired:
        pick = torch.tensor(paired, device=classes[-1].device)
        loss = segmentation_loss(criterion, [c[pick] for c in classes], [m[pick] for m in masks],
                                 [mask_labels[b] for b in paired], [class_labels[b] for b in paired])
    else:
        # no target in this micro-batch: the loss's mask count is summed across workers, so this worker still
        # takes part (with none), and every output stays in the graph, so that data parallelism finds a
        # gradient for every parameter
        masks_per_worker([], classes[-1].device)
        loss = 0.0 * sum(c.float().sum() for c in classes) + 0.0 * sum(m.float().sum() for m in masks)
    if words is not None:
        loss = loss + grounding_weight * grounding_loss(list(out[2]), words, F.normalize(text.float(), dim=-1),
                                                        scale)
    return loss


def train_step(model: torch.nn.Module, criterion: torch.nn.Module, micro_batches: list[tuple], text: torch.Tensor,
               optimizer: torch.optim.Optimizer, scheduler=None, grad_clip: float | None = None,
               precision: str = "fp32", grounding_weight: float = 0.0, scale: float = 50.0) -> float:
    """One optimizer step over `micro_batches` of prepare_batch's output; returns the mean loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, batch in enumerate(micro_batches):
        with accumulating(model, i == len(micro_batches) - 1):
            loss = batch_loss(model, criterion, batch, text, grounding_weight, scale, precision) / len(micro_batches)
            loss.backward()
        total += float(loss.detach())
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return total


def _build(plan: SegmenterPlan, rank: int, device: torch.device) -> tuple:
    """(the vocabulary's text embeddings, Model B on `device`, its processor, its criterion)."""
    cfg = plan.train
    clip = load_clip(plan.clip_config(), device, plan.s3_options())
    text = text_embeddings(clip, plan.vocabulary, device, plan.clip_config().templates)
    del clip
    model, processor = build_segmenter(plan.teacher, text.shape[1], cfg.logit_scale, cfg.seed)
    model.to(device)
    frozen = freeze_unused_parameters(model)
    if frozen and rank == 0:
        logger.info("not trained (no output depends on them): %s", ", ".join(frozen))
    criterion = make_criterion(model.mask2former, len(plan.vocabulary), cfg.no_object_weight, cfg.class_weight,
                               cfg.mask_weight, cfg.dice_weight, cfg.train_num_points).to(device)
    return text, model, processor, criterion


def train_loop(plan: SegmenterPlan, rank: int, world: int, device: torch.device,
               wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
               report: ReportFn | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """The loop both executors run; `report` and `resume` as in `mining.train.clip_trainer.train_loop`."""
    cfg = plan.train
    torch.manual_seed(cfg.seed + rank)
    text, model, processor, criterion = _build(plan, rank, device)
    index = {noun: i for i, noun in enumerate(plan.vocabulary)}
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg.warmup_steps, plan.total_steps)
    step, history = 0, []
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        step, history = int(resume["step"]), list(resume["metrics"])
        logger.info("resuming at step %d of %d", step, plan.total_steps)
    resumed_from = step
    net = wrap(model)
    net.train()

    sources = ShardSource.from_plan(plan.sources, plan.s3_options())
    grounding = cfg.grounding_weight > 0
    stream = TargetStream(sources, PairFilter.from_config(cfg.filters), rank, world, cfg.seed, cfg.shuffle_buffer,
                          grounding)
    # a resumed run lands its stream, its flips and its random state where the checkpoint left them
    mine = worker_resume(resume, rank) or {}
    items = resumed_stream(stream, mine.get("targets"))
    flip_rng = np.random.default_rng([cfg.seed, rank, 0])
    if mine:
        restore_rng(mine["rng"])
        flip_rng.bit_generator.state = mine["flips"]
    precision = resolve_precision(cfg.precision, device)

    def micro_batch() -> tuple:
        batch = [next(items) for _ in range(cfg.batch_size)]
        flips = list(flip_rng.random(len(batch)) < 0.5) if cfg.hflip else None
        return prepare_batch(processor, batch, index, device, flips, grounding)

    def state() -> dict[str, Any]:
        return {"model": _unwrap(net).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "metrics": history,
                "counts": stream.counts.to_json(), "passes": stream.passes, "resumed_from": resumed_from,
                "workers": [{"targets": stream.state(), "rng": rng_state(), "flips": flip_rng.bit_generator.state}]}

    log = StepLog(history, plan.total_steps, cfg.log_every, cfg.checkpoint_every, rank,
                  cfg.batch_size * cfg.grad_accum * world)
    while step < plan.total_steps:
        lr = max(g["lr"] for g in optimizer.param_groups)
        loss = train_step(net, criterion, [micro_batch() for _ in range(cfg.grad_accum)], text, optimizer,
                          scheduler, cfg.grad_clip, precision, cfg.grounding_weight, cfg.logit_scale)
        step += 1
        log.step_done(step, loss, lr, plan.total_steps)
        if report is not None and log.checkpoint_due(step):
            report({"step": step, "loss": loss}, state())
    if report is not None and step == resumed_from:   # resumed at its end: this run's state is still reported
        report({"step": step, "loss": None}, state())
    return state()


def own_record(plan: SegmenterPlan, final: dict[str, Any], out: Location, workers: int) -> dict[str, Any]:
    """Model B's fields of training.json."""
    cfg = plan.train
    return {"model": out.absolute().uri, "started_from": {"teacher": plan.teacher, "clip": plan.clip["model"]},
            "samples_per_step": cfg.batch_size * cfg.grad_accum * workers}


def write_folder(plan: SegmenterPlan, final: dict[str, Any], folder: Path, meta: dict[str, Any]) -> None:
    dim = final["model"]["head.no_object"].shape[0]
    model, processor = build_segmenter(plan.teacher, dim, plan.train.logit_scale)
    model.load_state_dict(final["model"])
    save_segmenter(model, processor, folder, plan.clip, plan.vocabulary, meta)


def models_named(cfg: SegmenterConfig) -> list[str | None]:
    return [cfg.teacher, cfg.clip.get("model")]


SEGMENTER_TRAINER = Trainer(kind="segmenter", folder_kind=SEGMENTER, descriptor=META_FILE, make_plan=make_plan,
                            train_loop=train_loop, starts_from=models_named, record=own_record,
                            write_folder=write_folder)
finish = functools.partial(run.finish, SEGMENTER_TRAINER)
run_local = functools.partial(run.run_local, SEGMENTER_TRAINER)


def train_segmenter(cfg: SegmenterConfig, outputs: list[str], out: str | Path | Location, executor: str = "local",
                    overwrite: bool = False) -> dict[str, Any]:
    """Train Model B on the pairs of `outputs` and write it to `out` (local or s3://, reached as `cfg.storage`
    says); returns training.json's content."""
    return run.run_training(SEGMENTER_TRAINER, cfg, outputs, out, executor, overwrite)
