"""Model A: the mask-adapted CLIP (OVSeg §3.3). CLIP's image tower is fine-tuned on masked crops of mined
mask–noun pairs; the loss is the cross-entropy of each crop's L2-normalised embedding against the frozen,
ViLD-template-ensembled text embeddings of the vocabulary (every noun of the training data), scaled by the
model's own (frozen) logit scale. `method` picks what is trained: the image tower (FT), mask prompts with CLIP
frozen (MPT, `mining.regions.mask_prompts`), or FT then MPT; `grounding.weight` adds OpenSeg's grounding loss over every
mask and noun of every image (`mining.train.grounding`).

`train_loop` is the whole training loop, shared by both executors: the in-process one here (`run_local`) and
Ray Train's workers (`mining.train.ray_train`); they differ only in how the image tower is wrapped (DDP), how
a checkpoint is reported and where a resumed state comes from. The result is an open_clip `local-dir:`
folder that `regions.model: local-dir:<dir>` loads unchanged.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mining.config import RegionsConfig
from mining.devices import forward_precision, resolve_precision
from mining.logs import logger
from mining.regions.clip_loader import LoadedClip, load_clip, register_model_configs
from mining.regions.text import embedder_for
from mining.sinks.guard import CLIP_MODEL
from mining.storage import Location, S3Options
from mining.train.config import TrainConfig
from mining.train.checkpoints import restore_rng, rng_state, worker_resume
from mining.train import run
from mining.train.data import CropSpec, EpochStream, ExampleStream, NoTrainingData, PairFilter, ShardSource, scan_pairs
from mining.train.grounding import (ImageStream, ScaledTower, grounding_loss, noun_rows, scan_entity_nouns,
                                    temperature_scale)
from mining.train.run import Plan, ReportFn, StepLog, Trainer, TrainingData
from mining.regions.mask_prompts import MaskPromptedViT, save_mask_prompts, strip_mask_prompts


@dataclass(kw_only=True)
class TrainPlan(Plan):
    """Model A's plan: the CLIP to start from and its crop settings besides the common fields."""
    regions: dict[str, Any]             # RegionsConfig of the model to start from, resolved
    crop: dict[str, Any]                # CropSpec fields except mean/std/size (from the model)
    config_class: ClassVar[type] = TrainConfig

    def regions_config(self) -> RegionsConfig:
        return RegionsConfig.model_validate(self.regions)


def make_plan(cfg: TrainConfig, outputs: list[str], workers: int | None = None) -> TrainPlan:
    """Read the outputs' manifests and records (no pictures): the model to start from, the crop settings, the
    vocabulary and the number of steps. With several outputs, the first one's `regions` config is the
    default model and crop settings (each output's own manifest still decodes its pictures)."""
    data = TrainingData.read(outputs, S3Options.from_config(cfg.storage), workers)
    run_regions = data.manifests[0]["config"]["regions"]
    regions = RegionsConfig.model_validate(run_regions | cfg.regions)
    if regions.mode != "masked_crop":
        # Model A trains on masked crops whatever the run embedded with; a pooling run has no crop context
        # of its own (its crop_context is the default [1.0]): crops are tight, as OVSeg's
        regions = regions.model_copy(update={"mode": "masked_crop", "scales": None})
    filters = PairFilter.from_config(cfg.filters)
    vocabulary, counts = scan_pairs(data.sources, filters, require=cfg.pair_weight > 0)
    if cfg.grounding.weight > 0:
        # the caption nouns no pair kept are negatives (and, for the grounding loss, words to ground)
        vocabulary = sorted(set(vocabulary) | scan_entity_nouns(data.sources, filters))
        if not vocabulary:
            raise NoTrainingData(f"{data.names}: no caption noun to ground ({counts.records} records)")
    world = workers or 1
    if cfg.steps is not None:
        steps = cfg.steps
    elif cfg.pair_weight > 0:
        kept = counts.pairs - counts.filtered
        steps = max(1, math.ceil(cfg.epochs * kept / (cfg.batch_size * cfg.grad_accum * world)))
    else:   # grounding only: epochs over images
        steps = max(1, math.ceil(cfg.epochs * counts.records / (cfg.grounding.images * cfg.grad_accum * world)))
    if cfg.method == "ft+mpt":
        steps += cfg.mpt.steps or steps
    crop = {"context": cfg.crop_context if cfg.crop_context is not None else regions.crop_context[0],
            "fit": cfg.crop_fit or regions.crop_fit}
    return TrainPlan(cfg=cfg.resolved(), regions=regions.model_dump(mode="json"),
                     sources=[s.to_plan() for s in data.sources], vocabulary=vocabulary, total_steps=steps,
                     crop=crop, scan=counts.to_json())


def crop_spec(plan: TrainPlan, clip: LoadedClip) -> CropSpec:
    return CropSpec(size=clip.input_size, mean=clip.mean, std=clip.std, **plan.crop)


def freeze_all_but_image_tower(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.visual.parameters():
        p.requires_grad_(True)
    return [p for p in model.visual.parameters()]


def text_embeddings(clip: LoadedClip, vocabulary: list[str], device: torch.device, templates: str) -> torch.Tensor:
    """float[V, D] frozen, L2-normalised, template-ensembled text embeddings, as mining embeds entities."""
    embed = embedder_for(clip, device, templates)
    return torch.from_numpy(embed(vocabulary)).to(device).clone()


def make_optimizer(visual: torch.nn.Module, cfg: TrainConfig, lr: float | None = None,
                   weight_decay: float | None = None) -> torch.optim.Optimizer:
    """AdamW over the parameters that require grad; weights decay, biases, norms, other 1-d parameters and what
    the tower itself exempts (a ViT's positional and class embeddings) do not (as CLIP and OVSeg train).
    `lr`/`weight_decay` default to the FT ones of `cfg`; a `ScaledTower`'s temperature trains at
    `grounding.scale_lr`."""
    exempt = no_weight_decay(visual)
    named = [(n, p) for n, p in visual.named_parameters() if p.requires_grad and n != "log_scale"]
    decay = [p for n, p in named if p.ndim >= 2 and n not in exempt]
    rest = [p for n, p in named if p.ndim < 2 or n in exempt]
    wd = cfg.weight_decay if weight_decay is None else weight_decay
    groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    if isinstance(visual, ScaledTower):   # the grounding temperature, at its own rate
        groups.append({"params": [visual.log_scale], "weight_decay": 0.0, "lr": cfg.grounding.scale_lr})
    return torch.optim.AdamW(groups, lr=cfg.lr if lr is None else lr, betas=(0.9, 0.98), eps=1e-6)


def no_weight_decay(module: torch.nn.Module) -> set[str]:
    """Names (as `module.named_parameters` gives them) of the parameters that a tower inside `module` exempts
    from weight decay through timm's and open_clip's `no_weight_decay()` (e.g. {'positional_embedding',
    'class_embedding'} of an open_clip ViT)."""
    exempt = set()
    for prefix, sub in module.named_modules():
        names = sub.no_weight_decay() if callable(getattr(sub, "no_weight_decay", None)) else ()
        exempt |= {f"{prefix}.{n}" if prefix else n for n in names}
    return exempt


@dataclass(frozen=True)
class Phase:
    """A stretch of steps with one thing trained: 'ft' (the image tower) or 'mpt' (the prompts only)."""
    method: str
    start: int
    end: int
    lr: float
    weight_decay: float


def training_phases(cfg: TrainConfig, total_steps: int) -> list[Phase]:
    """ft: one FT phase; mpt: one MPT phase; ft+mpt: FT, then MPT on the fine-tuned tower (OVSeg A.4)."""
    ft = ("ft", cfg.lr, cfg.weight_decay)
    mpt = ("mpt", cfg.mpt.lr, cfg.mpt.weight_decay)
    if cfg.method != "ft+mpt":
        method, lr, wd = ft if cfg.method == "ft" else mpt
        return [Phase(method, 0, total_steps, lr, wd)]
    mpt_steps = cfg.mpt.steps or total_steps // 2
    return [Phase(*ft[:1], 0, total_steps - mpt_steps, *ft[1:]), Phase(*mpt[:1], total_steps - mpt_steps,
                                                                      total_steps, *mpt[1:])]


def trainable_module(model: torch.nn.Module, phase: Phase, prompted: MaskPromptedViT | None) -> torch.nn.Module:
    """The module a phase calls on crops, with only that phase's parameters requiring grad. FT trains the tower
    under the prompts, frozen, when there are some (a start from a prompted folder): the model it writes keeps
    them, and mining applies them."""
    for p in model.parameters():
        p.requires_grad_(False)
    if phase.method == "ft":
        for p in model.visual.parameters():
            p.requires_grad_(True)
        if prompted is not None:
            prompted.prompts.requires_grad_(False)
            return prompted
        return model.visual
    for p in prompted.visual.parameters():
        p.requires_grad_(False)
    prompted.prompts.requires_grad_(True)
    return prompted


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))


def make_scheduler(opt: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))


def crop_loss(visual: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
              logit_scale: float) -> torch.Tensor:
    emb = F.normalize(visual(pixels).float(), dim=-1)
    return F.cross_entropy(logit_scale * emb @ text.T, labels)


def mixed_loss(visual: torch.nn.Module, pixels: torch.Tensor | None, labels: torch.Tensor | None,
               images: list | None, words: torch.Tensor | None, text: torch.Tensor, logit_scale: float,
               pair_weight: float = 1.0, grounding_weight: float = 0.0) -> torch.Tensor:
    """pair_weight * the pairs' cross-entropy + grounding_weight * OpenSeg's grounding loss over `images`
    (ImageExamples: all masks, all nouns; `words` their `noun_rows`), in one forward pass over every crop. The
    grounding loss takes its temperature from a `ScaledTower` when `visual` is one (learned), else `logit_scale`."""
    # the pairs' crops and the images' crops come from two streams: one device for both
    parts = ([pixels] if pixels is not None else []) + [im.pixels for im in images or []]
    emb = F.normalize(visual(torch.cat([p.to(text.device) for p in parts])).float(), dim=-1)
    loss = emb.new_zeros(())
    n = 0
    if pixels is not None:
        loss = loss + pair_weight * F.cross_entropy(logit_scale * emb[:len(pixels)] @ text.T, labels)
        n = len(pixels)
    if images:
        regions = []
        for im in images:
            regions.append(emb[n:n + len(im.pixels)])
            n += len(im.pixels)
        tower = _unwrap(visual)
        scale = tower.scale() if isinstance(tower, ScaledTower) else logit_scale
        loss = loss + grounding_weight * grounding_loss(regions, words, text, scale)
    return loss


def accumulating(module: torch.nn.Module, last: bool):
    """DDP's `no_sync` for every micro-batch but the last: gradients are all-reduced once per step."""
    return module.no_sync() if not last and hasattr(module, "no_sync") else contextlib.nullcontext()


def train_step(visual: torch.nn.Module, micro_batches: list[tuple], text: torch.Tensor,
               logit_scale: float, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
               loss_fn: Callable[..., torch.Tensor] = crop_loss, grad_clip: float | None = None,
               precision: str = "fp32") -> float:
    """One optimizer step over `micro_batches` (gradient accumulation); each is `loss_fn(visual, *batch, text,
    logit_scale)`, by default (pixels, labels) of the pairs' cross-entropy, its forward pass at `precision`
    (resolved: `mining.devices.resolve_precision`). Returns the mean loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    device = next(visual.parameters()).device
    for i, batch in enumerate(micro_batches):
        with accumulating(visual, i == len(micro_batches) - 1), forward_precision(device, precision):
            loss = loss_fn(visual, *batch, text, logit_scale) / len(micro_batches)
        loss.backward()
        total += float(loss.detach())
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return total


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if hasattr(module, "module") else module


class _ClipRun:
    """One worker's training of the image tower (`train_loop`): the model and its prompts, the streams, the step
    and its history. Built in the order the random state is drawn in, so a resumed run continues exactly."""

    def __init__(self, plan: TrainPlan, rank: int, world: int, device: torch.device,
                 resume: dict[str, Any] | None) -> None:
        self.plan, self.cfg, self.rank, self.device, self.resume = plan, plan.train, rank, device, resume
        torch.manual_seed(self.cfg.seed + rank)
        self.phases = training_phases(self.cfg, plan.total_steps)
        self._build_model()
        self.step, self.history = 0, []
        if resume is not None:
            self._restore(resume)
        self.resumed_from = self.step
        self._open_streams(world)
        self.optimizer = self.scheduler = None
        self.number = resume.get("phase", 0) if resume is not None else 0

    def _build_model(self) -> None:
        cfg, plan, device = self.cfg, self.plan, self.device
        self.clip = load_clip(plan.regions_config(), device, plan.s3_options())
        self.model = self.clip.model
        start_prompts = strip_mask_prompts(self.model)   # a prompted folder: train the plain tower, keep its prompts
        freeze_all_but_image_tower(self.model)
        self.text = text_embeddings(self.clip, plan.vocabulary, device, plan.regions_config().templates)
        scale = getattr(self.model, "logit_scale", None)
        self.logit_scale = float(scale.detach().exp()) if scale is not None else 100.0
        self.index = {noun: i for i, noun in enumerate(plan.vocabulary)}
        self.log_scale = None   # the grounding loss's learnable temperature, from the model's logit scale
        if cfg.grounding.weight > 0 and cfg.grounding.learn_scale:
            self.log_scale = torch.nn.Parameter(torch.tensor(math.log(self.logit_scale), device=device))
        # built (and refused for a non-ViT tower) before any data is read; seeded alike on every worker
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.prompted = None
            if start_prompts is not None or any(ph.method == "mpt" for ph in self.phases):
                reuse = start_prompts is not None and (start_prompts.shape[0] == cfg.mpt.depth or
                                                       all(ph.method == "ft" for ph in self.phases))
                self.prompted = MaskPromptedViT(self.model.visual, cfg.mpt.depth, cfg.mpt.init_std,
                                                prompts=start_prompts if reuse else None)

    def _restore(self, resume: dict[str, Any]) -> None:
        self.model.visual.load_state_dict(resume["visual"])
        if self.prompted is not None and resume.get("prompts") is not None:
            self.prompted.prompts.data.copy_(resume["prompts"])
        self.step, self.history = int(resume["step"]), list(resume["metrics"])
        if self.log_scale is not None and resume.get("grounding_log_scale") is not None:
            self.log_scale.data.fill_(float(resume["grounding_log_scale"]))
        logger.info("resuming at step %d of %d", self.step, self.plan.total_steps)

    def _open_streams(self, world: int) -> None:
        """The pairs and grounding images each worker reads; a resumed run lands its streams where the
        checkpoint left them, and its random state with them."""
        cfg, plan = self.cfg, self.plan
        sources = ShardSource.from_plan(plan.sources, plan.s3_options())
        filters, crop = PairFilter.from_config(cfg.filters), crop_spec(plan, self.clip)
        mine = worker_resume(self.resume, self.rank) or {}
        if mine:
            restore_rng(mine["rng"])
        self.streams: dict[str, EpochStream] = {}
        self.examples = self.images = None
        if cfg.pair_weight > 0:
            self.streams["pairs"] = ExampleStream(sources, filters, crop, self.rank, world, cfg.seed,
                                                  cfg.shuffle_buffer)
            self.examples = resumed_stream(self.streams["pairs"], mine.get("pairs"))
        if cfg.grounding.weight > 0:
            self.streams["images"] = ImageStream(sources, filters, crop, cfg.grounding.max_masks, self.rank, world,
                                                 cfg.seed + 1, cfg.grounding.shuffle_buffer)
            self.images = resumed_stream(self.streams["images"], mine.get("images"))
        self.stream = self.streams.get("pairs") or self.streams["images"]
        self.log = StepLog(self.history, plan.total_steps, cfg.log_every, cfg.checkpoint_every, self.rank,
                           cfg.grad_accum * world * (cfg.batch_size * (self.examples is not None) +
                                                     cfg.grounding.images * (self.images is not None)))

    def micro_batch(self) -> tuple:
        cfg, device = self.cfg, self.device
        pixels = labels = batch_images = words = None
        if self.examples is not None:
            batch = [next(self.examples) for _ in range(cfg.batch_size)]
            pixels = torch.stack([e.pixels for e in batch]).to(device)
            labels = torch.tensor([self.index[e.noun] for e in batch], device=device)
        if self.images is not None:
            batch_images = [next(self.images) for _ in range(cfg.grounding.images)]
            words = noun_rows([e.nouns for e in batch_images], self.index, device, cfg.grounding.word_keep)
        return pixels, labels, batch_images, words

    def loss_fn(self, module, pixels, labels, batch_images, words, text_emb, scale_value):
        return mixed_loss(module, pixels, labels, batch_images, words, text_emb, scale_value, self.cfg.pair_weight,
                          self.cfg.grounding.weight)

    def state(self) -> dict[str, Any]:
        """The checkpoint; a run resumed at its last step (killed before its folder was written) has trained
        nothing, and carries the resumed optimizer and schedule on."""
        earlier = self.resume or {}
        return {"visual": self.model.visual.state_dict(),
                "prompts": self.prompted.prompts.detach().clone() if self.prompted is not None else None,
                "grounding_log_scale": float(self.log_scale.detach()) if self.log_scale is not None else None,
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else earlier.get("optimizer"),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else earlier.get("scheduler"),
                "phase": self.number, "step": self.step, "metrics": self.history,
                "counts": self.stream.counts.to_json(), "passes": self.stream.passes,
                "resumed_from": self.resumed_from,
                "workers": [{name: st.state() for name, st in self.streams.items()} | {"rng": rng_state()}]}

    def _scale(self) -> dict[str, float]:
        """The learnt grounding temperature, for the metrics history (when it is learnt)."""
        if self.log_scale is None:
            return {}
        return {"grounding_scale": round(float(temperature_scale(self.log_scale.detach())), 4)}

    def run_phase(self, number: int, phase: Phase, wrap: Callable[[torch.nn.Module], torch.nn.Module],
                  report: ReportFn | None) -> None:
        """Train one phase (its own trainable module, optimizer and schedule) to its last step."""
        cfg, resume = self.cfg, self.resume
        module = trainable_module(self.model, phase, self.prompted)
        if self.log_scale is not None:
            module = ScaledTower(module, self.log_scale)
        self.optimizer = make_optimizer(module, cfg, phase.lr, phase.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, min(cfg.warmup_steps, phase.end - phase.start - 1),
                                        phase.end - phase.start)
        if resume is not None and resume.get("phase", 0) == number and self.step > phase.start:
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
        trained = wrap(module)
        trained.train()
        self.log.start()
        while self.step < phase.end:
            lr = self.optimizer.param_groups[0]["lr"]
            loss = train_step(trained, [self.micro_batch() for _ in range(cfg.grad_accum)], self.text,
                              self.logit_scale, self.optimizer, self.scheduler, self.loss_fn, cfg.grad_clip,
                              resolve_precision(cfg.precision, self.device))
            self.step += 1
            self.log.step_done(self.step, loss, lr, phase.end, tags={"phase": phase.method}, extra=self._scale)
            if report is not None and self.log.checkpoint_due(self.step):
                report({"step": self.step, "loss": loss}, self.state())


def train_loop(plan: TrainPlan, rank: int, world: int, device: torch.device,
               wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
               report: ReportFn | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training loop both executors run. `report(metrics, state)` is called every `checkpoint_every`
    steps and after the last with `state` = the checkpoint (image tower, mask prompts, optimizer, scheduler,
    step, metrics history) on every worker, so a distributed report is a collective call; `resume` is such a
    state. Each phase (`training_phases`) wraps its own trainable module and builds its own optimizer and
    schedule. Returns the final state."""
    run_ = _ClipRun(plan, rank, world, device, resume)
    for number, phase in enumerate(run_.phases):
        run_.number = number   # the checkpoint's phase: the last one, once every phase is done
        if run_.step < phase.end:
            run_.run_phase(number, phase, wrap, report)
    if report is not None and run_.step == run_.resumed_from:   # resumed at its end: its state is still reported
        report({"step": run_.step, "loss": None}, run_.state())
    final = run_.state()
    final["final_loss"] = run_.history[-1]["loss"] if run_.history else None   # the last step is always logged
    return final


def resumed_stream(stream: EpochStream, saved: dict[str, Any] | None):
    """The stream's items for ever, from where a checkpoint left it (`saved`: its `state()`), or from the start."""
    if saved is None:
        return stream.forever()
    return stream.forever(tuple(saved["position"]), saved)


def model_files_config(regions: RegionsConfig, clip: LoadedClip) -> dict[str, Any]:
    """open_clip_config.json of the model: its architecture (from wherever open_clip found it) and the
    preprocessing mining uses."""
    register_model_configs(regions.model_config_dir)
    model_cfg = open_clip.get_model_config(regions.model)
    if model_cfg is None:
        raise ValueError(f"regions.model={regions.model!r}: open_clip has no config for it; cannot write a "
                         f"local-dir model")
    return {"model_cfg": model_cfg,
            "preprocess_cfg": {"mean": list(clip.mean), "std": list(clip.std), "size": clip.input_size,
                               "interpolation": "bicubic", "resize_mode": "shortest"}}


def wise_ft(start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """alpha x trained + (1 - alpha) x start, weight by weight (WiSE-FT); integer buffers (a batch-norm's
    step count) are the trained ones."""
    if alpha == 1.0:
        return trained
    return {k: torch.lerp(start[k].to(v.device, v.dtype), v, alpha) if v.is_floating_point() else v
            for k, v in trained.items()}


def write_local_dir(plan: TrainPlan, visual_state: dict[str, torch.Tensor], out: Path, meta: dict[str, Any],
                    prompts: torch.Tensor | None = None) -> Path:
    """The trained model as an open_clip local-dir folder: the starting model with the trained image tower
    (mixed with its starting weights by `wise_ft`), a plain CLIP whatever the method; mask prompts, if any,
    beside it (`mining.regions.mask_prompts`)."""
    regions = plan.regions_config()
    clip = load_clip(regions, torch.device("cpu"), plan.s3_options())
    strip_mask_prompts(clip.model)   # a prompted starting folder: the trained prompts are saved beside
    clip.model.visual.load_state_dict(wise_ft(clip.model.visual.state_dict(), visual_state, plan.train.wise_ft))
    dtype = torch.float16 if plan.train.save_dtype == "float16" else torch.float32
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in clip.model.state_dict().items()}
    save_file(tensors, str(out / "open_clip_model.safetensors"),
              metadata={"ovmine": "mask-adapted CLIP (ovmine train clip)"})
    config = model_files_config(regions, clip) | {"training": meta}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if prompts is not None:
        save_mask_prompts(prompts, out)
    return out


def own_record(plan: TrainPlan, final: dict[str, Any], out: Location, workers: int) -> dict[str, Any]:
    """Model A's fields of training.json."""
    cfg = plan.train
    return {"model": f"local-dir:{out.absolute().uri}",
            "started_from": {"model": plan.regions["model"], "pretrained": plan.regions["pretrained"]},
            "method": cfg.method, "mask_prompts": final.get("prompts") is not None, "crop": plan.crop,
            "wise_ft": cfg.wise_ft,
            "samples_per_step": cfg.grad_accum * workers * (cfg.batch_size * (cfg.pair_weight > 0) +
                                                            cfg.grounding.images * (cfg.grounding.weight > 0))}


def models_named(cfg: TrainConfig) -> list[str | None]:
    return [cfg.regions.get("model")]


def write_folder(plan: TrainPlan, final: dict[str, Any], folder: Path, meta: dict[str, Any]) -> None:
    write_local_dir(plan, final["visual"], folder, meta, final.get("prompts"))


CLIP_TRAINER = Trainer(kind="clip", folder_kind=CLIP_MODEL, descriptor="open_clip_config.json",
                       make_plan=make_plan, train_loop=train_loop, starts_from=models_named, record=own_record,
                       write_folder=write_folder)
finish = functools.partial(run.finish, CLIP_TRAINER)
run_local = functools.partial(run.run_local, CLIP_TRAINER)


def train_clip(cfg: TrainConfig, outputs: list[str], out: str | Path | Location, executor: str = "local",
               overwrite: bool = False) -> dict[str, Any]:
    """Train Model A on the pairs of `outputs` and write it to `out` (local or s3://, reached as `cfg.storage`
    says); returns training.json's content."""
    return run.run_training(CLIP_TRAINER, cfg, outputs, out, executor, overwrite)
