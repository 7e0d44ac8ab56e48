"""What both trainers do around their loop, once: claim the output folder (write guard and lease), plan, take the
checkpoint store (resume, or refuse another config), run in-process or on Ray Train, and write the folder."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mining.storage import Location, S3Options
from mining.train.checkpoints import CheckpointStore, plan_hash
from mining.train.model_output import claim_model_folder


def run_training(kind: str, folder_kind: str, cfg: Any, outputs: list[str], out: str | Path | Location,
                 executor: str, s3: S3Options | None, overwrite: bool, starts_from: list[str | None],
                 make_plan: Callable, run_local: Callable, finish: Callable) -> dict[str, Any]:
    """Train `kind` ('clip' or 'segmenter', a key of `mining.train.ray_train.TRAINERS`) into `out`; returns the
    training record. `make_plan`, `run_local` and `finish` are the trainer's own."""
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    out = out if isinstance(out, Location) else Location.of(str(out), s3)
    workers = cfg.workers if executor == "ray" else 1
    lease = claim_model_folder(out, folder_kind, outputs, starts_from, overwrite, s3)   # before any work
    plan = make_plan(cfg, outputs, s3, workers)
    with lease:
        store = CheckpointStore.of_output(out)
        store.begin(kind, plan_hash(kind, plan), overwrite)
        start = time.time()
        if executor == "ray":
            from mining.train.ray_train import run_ray

            final = run_ray(plan, out, store, kind=kind)
        else:
            final = run_local(plan, store)
        return finish(plan, final, out, outputs, executor, time.time() - start, workers)
