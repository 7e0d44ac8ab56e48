"""One run machinery for both trainers. A `Trainer` (Model A, `mining.train.clip_trainer`; Model B,
`mining.train.segmenter_trainer`) fills in its plan, its loop and its folder; everything around them is here,
once: reading the training data, claiming the output folder (write guard and lease), the checkpoint store
(resume, or refuse another config), running in-process or on Ray Train (`mining.train.ray_train`), and
publishing the folder with its records."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from mining.logs import logger
from mining.storage import Location, S3Options
from mining.train.checkpoints import CheckpointStore, checkpointing, plan_hash
from mining.train.data import NoTrainingData, ShardSource, output_manifest, shard_sources
from mining.train.model_output import claim_model_folder, publish_folder, staging

# what a model folder's own descriptor repeats of training.json
FOLDER_META = ("started_from", "data", "steps", "final_loss", "executor", "method", "wise_ft")

ReportFn = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclass(kw_only=True)
class Plan:
    """Everything a worker needs, resolved on the driver (picklable: plain values only); each trainer's plan
    adds the models it starts from."""
    cfg: dict[str, Any]                 # the trainer's config, resolved
    sources: list[tuple[str, str]]      # (output, shard URI)
    vocabulary: list[str]
    total_steps: int
    scan: dict[str, int] = field(default_factory=dict)   # DataCounts of the driver's scan
    config_class: ClassVar[type]

    @property
    def train(self):
        return self.config_class.model_validate(self.cfg)

    def s3_options(self) -> S3Options:
        """How the data and the output are reached: the config's `storage` section."""
        return S3Options.from_config(self.train.storage)


@dataclass(frozen=True)
class TrainingData:
    """The mining outputs a training reads: their manifests (read once, here) and committed shards."""
    outputs: list[Location]
    manifests: list[dict[str, Any]]
    sources: list[ShardSource]

    @property
    def names(self) -> str:
        return ", ".join(o.uri for o in self.outputs)

    @classmethod
    def read(cls, outputs: list[str], s3: S3Options | None, workers: int | None) -> "TrainingData":
        if not outputs:
            raise NoTrainingData("no training data given (--data OUTPUT ...)")
        located = [Location.of(o, s3) for o in outputs]
        data = cls(located, [output_manifest(o) for o in located], shard_sources(located))
        world = workers or 1
        if world > len(data.sources):
            raise NoTrainingData(f"{world} workers but only {len(data.sources)} shard(s) in {data.names}: shards "
                                 f"are split between workers; use --set workers={len(data.sources)} or fewer")
        return data


@dataclass(frozen=True)
class Trainer:
    """What a trainer fills in. Functions, not methods of a live object, so that Ray ships a trainer to its
    workers by reference (module-level functions pickle by name)."""
    kind: str                 # 'clip' or 'segmenter': the checkpoints' and Ray Train run's name
    folder_kind: str          # the write guard's kind of its output (`mining.sinks.guard`)
    descriptor: str           # the folder's file loaders look for first: published last
    make_plan: Callable[..., Plan]                  # (cfg, outputs, workers) -> Plan
    train_loop: Callable[..., dict[str, Any]]       # (plan, rank, world, device, wrap, report, resume) -> state
    starts_from: Callable[[Any], list[str | None]]  # cfg -> the models it names (the guard protects them)
    record: Callable[[Plan, dict[str, Any], Location, int], dict[str, Any]]   # its own training.json fields
    write_folder: Callable[[Plan, dict[str, Any], Path, dict[str, Any]], None]  # (plan, final, folder, meta)


def device_for(use_gpu: bool) -> torch.device:
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def run_local(trainer: Trainer, plan: Plan, store: CheckpointStore | None = None) -> dict[str, Any]:
    """In-process, one worker; with a `store`, checkpointed and resumed like a Ray run."""
    return trainer.train_loop(plan, 0, 1, device_for(plan.train.use_gpu), **checkpointing(store))


def finish(trainer: Trainer, plan: Plan, final: dict[str, Any], out: Location | Path | str, outputs: list[str],
           executor: str, seconds: float, workers: int) -> dict[str, Any]:
    """Write the model folder, metrics.jsonl and training.json (staged locally, then published whole: see
    `mining.train.model_output`); return the training record."""
    out = out if isinstance(out, Location) else Location.of(str(out), plan.s3_options())
    history = final["metrics"]
    rates = [m["samples_per_s"] for m in history if m.get("samples_per_s")]
    own = trainer.record(plan, final, out, workers)
    record = {
        "model": own.pop("model"), "started_from": own.pop("started_from"),
        "data": outputs, "executor": executor, "workers": workers, **own,
        "steps": final["step"], "total_steps": plan.total_steps, "resumed_from_step": final.get("resumed_from", 0),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "samples_per_s": round(sum(rates) / len(rates), 2) if rates else None,
        "seconds": round(seconds, 2), "vocabulary": plan.vocabulary,
        "counts": {"scan": plan.scan, "rank0_stream": final.get("counts"), "rank0_passes": final.get("passes")},
        "config": plan.cfg,
    }
    with staging(out) as local:
        trainer.write_folder(plan, final, local, {k: record[k] for k in FOLDER_META if k in record})
        write_records(local, history, record)
        publish_folder(local, out, trainer.descriptor)
    return record


def write_records(folder: Path, history: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """metrics.jsonl (a line per logged step) and training.json (the record) of a model folder."""
    with open(folder / "metrics.jsonl", "w") as f:
        for m in history:
            f.write(json.dumps(m) + "\n")
    (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def run_training(trainer: Trainer, cfg: Any, outputs: list[str], out: str | Path | Location, executor: str,
                 overwrite: bool) -> dict[str, Any]:
    """Train into `out` (local or s3://, reached as `cfg.storage` says) on the pairs of `outputs`; returns the
    training record."""
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    s3 = S3Options.from_config(cfg.storage)
    out = out if isinstance(out, Location) else Location.of(str(out), s3)
    workers = cfg.workers if executor == "ray" else 1
    lease = claim_model_folder(out, trainer.folder_kind, outputs, trainer.starts_from(cfg), overwrite, s3)
    plan = trainer.make_plan(cfg, outputs, workers)   # after the guard: nothing is read for a refused run
    with lease:
        store = CheckpointStore.of_output(out)
        store.begin(trainer.kind, plan_hash(trainer.kind, plan), overwrite)
        start = time.time()
        if executor == "ray":
            from mining.train.ray_train import run_ray

            final = run_ray(trainer, plan, out, store)
        else:
            final = run_local(trainer, plan, store)
        return finish(trainer, plan, final, out, outputs, executor, time.time() - start, workers)


class StepLog:
    """Both trainers' record of their steps: an entry in the metrics `history` at the first step, every
    `log_every` steps and at the end of a phase (`end`), with the samples/s since the entry before; the rank-0
    log line; and whether a checkpoint is due (every `checkpoint_every` steps, and at the last)."""

    def __init__(self, history: list[dict[str, Any]], total_steps: int, log_every: int, checkpoint_every: int,
                 rank: int, per_step: int) -> None:
        self.history, self.total_steps, self.rank, self.per_step = history, total_steps, rank, per_step
        self.log_every, self.checkpoint_every = log_every, checkpoint_every
        self.start()

    def start(self) -> None:
        """A phase begins: samples/s counts from here."""
        self.tic, self.since = time.perf_counter(), 0

    def step_done(self, step: int, loss: float, lr: float, end: int, tags: dict[str, Any] | None = None,
                  extra: Callable[[], dict[str, Any]] | None = None) -> None:
        """`tags` go in the entry before samples/s and in the log line; `extra()` after, only when logged."""
        self.since += 1
        if not (step % self.log_every == 0 or step == end or step == 1):
            return
        elapsed = time.perf_counter() - self.tic
        entry = {"step": step, "loss": round(loss, 6), "lr": lr, **(tags or {}),
                 "samples_per_s": round(self.since * self.per_step / elapsed, 2) if elapsed > 0 else None}
        self.history.append(entry | (extra() if extra else {}))
        self.start()
        if self.rank == 0:
            label = "".join(f" ({value})" for value in (tags or {}).values())
            logger.info("step %d/%d%s loss %.4f lr %.3g", step, self.total_steps, label, loss, lr)

    def checkpoint_due(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.total_steps
