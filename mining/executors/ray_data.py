"""Ray Data execution: a streaming plan with one row per sample.

    shard URIs -> flat_map(read) -> decode (tasks) -> entities, teacher, regions (actor pools) -> match (tasks)

The driver collects rows by input shard and hands a shard on as soon as all of its samples have arrived
(the reader stamps each sample with its shard's size), so output shards are written while others are still
being mined and memory stays bounded by the shards in flight.

Samples travel pickled in a single binary column: they are our own dataclasses going between our own
workers, exactly what Ray would pickle anyway, but an opaque binary column spares Ray Data a failed attempt
to convert every batch to Arrow first. Nothing read from a dataset or bucket is ever unpickled.
"""
from __future__ import annotations

import pickle
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from mining.config import RunConfig, StageResources
from mining.logs import logger
from mining.records import Sample
from mining.sources.shards import read_shard
from mining.stage import Stage
from mining.storage import S3Options

ACTOR_STAGES = {"entities", "teacher", "regions"}   # stages that load a model once per worker
# A Ray instance that ovmine starts for itself serves this machine only: keep it on loopback. Ray rewrites
# 127.0.0.1 to the machine's network address, but leaves the rest of 127.0.0.0/8 (routed to lo on Linux) alone.
LOCAL_NODE_IP = "127.0.0.2" if sys.platform.startswith("linux") else None


def _as_column(samples: list[Sample]) -> dict[str, np.ndarray]:
    column = np.empty(len(samples), dtype=object)
    column[:] = [pickle.dumps(s, protocol=5) for s in samples]
    return {"sample": column}


def _from_column(batch: dict[str, np.ndarray]) -> list[Sample]:
    return [pickle.loads(b) for b in batch["sample"]]


def _read_rows(row: dict[str, Any], s3: S3Options) -> list[dict[str, bytes]]:
    return [{"sample": pickle.dumps(s, protocol=5)} for s in read_shard(row["uri"], s3, row["max_samples"])]


def _run_task_stage(batch: dict[str, np.ndarray], stage: Stage) -> dict[str, np.ndarray]:
    return _as_column(stage.run(_from_column(batch)))


class _StageActor:
    """Holds one stage on a Ray actor; setup() (model loading) runs once, in the actor."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.stage.setup()
        self.stage._ready = True

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _as_column(self.stage.run(_from_column(batch)))


def resolve_gpus(res: StageResources) -> float:
    """'auto' asks the cluster (not the driver's CUDA) whether it has GPUs to give."""
    if res.num_gpus == "auto":
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return float(res.num_gpus)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C: committed shards stay, Ray is shut down
    in order. Ray's own handler would abort the process with a C++ stack dump instead."""
    raise KeyboardInterrupt(f"signal {signum}")


class RayExecutor:
    def __init__(self, cfg: RunConfig, s3: S3Options, progress: bool = False) -> None:
        self.cfg, self.s3, self.progress = cfg, s3, progress
        self.started_ray = False

    def _init_ray(self) -> None:
        if not ray.is_initialized():
            address = self.cfg.execution.ray_address
            local = {"_node_ip_address": LOCAL_NODE_IP} if address is None and LOCAL_NODE_IP else {}
            ray.init(address=address, ignore_reinit_error=True, include_dashboard=False,
                     logging_level="WARNING", log_to_driver=True, **local)
            self.started_ray = True
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _terminate)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = False
        ctx.enable_progress_bars = self.progress

    def _apply(self, ds: ray.data.Dataset, stage: Stage) -> ray.data.Dataset:
        res = self.cfg.execution.resources(stage.name)
        common = dict(batch_size=res.batch_size, num_cpus=res.num_cpus, num_gpus=resolve_gpus(res),
                      batch_format="numpy", zero_copy_batch=False)
        ex = self.cfg.execution
        if stage.name in ACTOR_STAGES:
            # a dead actor (its worker or node lost) is restarted and its in-flight batches retried
            return ds.map_batches(_StageActor, fn_constructor_args=(stage,),
                                  compute=ray.data.ActorPoolStrategy(size=res.concurrency),
                                  max_restarts=ex.max_actor_restarts, max_task_retries=ex.max_retries, **common)
        return ds.map_batches(_run_task_stage, fn_kwargs={"stage": stage},
                              compute=ray.data.TaskPoolStrategy(size=res.concurrency),
                              max_retries=ex.max_retries, **common)

    def run(self, tasks, stages: list[Stage]) -> Iterator[list[Sample]]:
        self._init_ray()
        items = [{"uri": t.uri, "max_samples": t.max_samples} for t in tasks]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        # reading is I/O-bound: a full CPU per read task would starve the actor pools on small machines
        ds = ds.flat_map(_read_rows, fn_kwargs={"s3": self.s3}, num_cpus=self.cfg.execution.decode.num_cpus,
                         max_retries=self.cfg.execution.max_retries)
        for stage in stages:
            ds = self._apply(ds, stage)
        pending: dict[str, list[Sample]] = defaultdict(list)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for sample in _from_column(batch):
                bucket = pending[sample.shard_stem]
                bucket.append(sample)
                if len(bucket) == sample.shard_size:
                    yield pending.pop(sample.shard_stem)
        if pending:  # cannot happen unless rows were lost; say so loudly rather than write partial shards
            raise RuntimeError(f"Ray run ended with incomplete shards: "
                               f"{ {k: len(v) for k, v in pending.items()} }")
        logger.info("ray executor finished %d shard(s)", len(tasks))

    def close(self) -> None:
        """Shut down the Ray this executor started (a cluster it joined is left alone). A second SIGTERM
        during shutdown is ignored: interrupting it would leave Ray's agent processes behind."""
        if not (self.started_ray and ray.is_initialized()):
            return
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if main else None
        try:
            ray.shutdown()
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous if previous is not _terminate else signal.SIG_DFL)
