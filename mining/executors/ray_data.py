"""Ray Data execution: a streaming plan with one row per chunk of an input shard.

    shard tasks -> flat_map(read chunks) -> decode (tasks) -> [refine,] entities, teacher, regions (actor pools)
                -> match (tasks) -> write (tasks: write and commit on the worker) -> small results to the driver

The workers write and commit the output shards; the driver only plans, receives each write's result (a
committed shard's marker, a written part, a shard that could not be read: a few hundred bytes per chunk) and
writes the manifest, so neither its memory nor its CPU grows with the images.

Chunks travel pickled in a single binary column: they are our own dataclasses going between our own workers,
exactly what Ray would pickle anyway, but an opaque binary column spares Ray Data a failed attempt to convert
every batch to Arrow first. Nothing read from a dataset or bucket is ever unpickled; results come back as JSON.

The console is the caller's: Ray Data's progress bars are off (the CLI draws one bar of its own), and the
two lines Ray prints for every healthy plan are handled at their source (see `_plan_without_deprecation`
and `_spend_restart_notice`).
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import ray

from mining.config import ConfigError, RunConfig, StageResources
from mining.executors import READY_AT, SETUP_S, PhaseCallback, ProgressCallback, StartupTimes
from mining.executors.ray_progress import BatchReporter, BoardPoller, open_board
from mining.executors.ray_start import init_ray, shutdown_ray
from mining.logs import logger
from mining.records import ShardChunk
from mining.stages import Flow
from mining.stages.base import Stage
from mining.stages.read import ShardReader
from mining.stages.write import ShardWriter, WriteResult


def _object_column(values: list[bytes]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)   # np.array would make one fixed-width bytes array instead
    column[:] = values
    return column


def _as_column(chunks: list[ShardChunk]) -> dict[str, np.ndarray]:
    return {"chunk": _object_column([pickle.dumps(c, protocol=5) for c in chunks])}


def _from_column(batch: dict[str, np.ndarray]) -> list[ShardChunk]:
    return [pickle.loads(b) for b in batch["chunk"]]


def _read_rows(row: dict[str, Any], reader: ShardReader) -> list[dict[str, bytes]]:
    return [{"chunk": pickle.dumps(c, protocol=5)} for c in reader.read(row["uri"], row["max_samples"])]


def _run_task_stage(batch: dict[str, np.ndarray], stage: Stage, board: Any = None) -> dict[str, np.ndarray]:
    chunks = _from_column(batch)
    reporter = BatchReporter(board) if board is not None else None
    for chunk in chunks:
        stage.run(chunk.samples, reporter)
    if reporter:
        reporter.flush()
    return _as_column(chunks)


def _write_rows(batch: dict[str, np.ndarray], writer: ShardWriter) -> dict[str, np.ndarray]:
    return {"result": _object_column([writer.write(chunk).to_json().encode() for chunk in _from_column(batch)])}


class _StageActor:
    """Holds one stage on a Ray actor; setup() (model loading) runs once, in the actor. The first chunk it
    passes on carries how long that took and when it was done, for the driver's start-up figures."""

    def __init__(self, stage: Stage, board: Any = None) -> None:
        self.stage = stage
        self.reporter = BatchReporter(board) if board is not None else None
        self.stage.prepare()
        self.stamps: dict[str, float] | None = {SETUP_S + stage.name: stage.setup_seconds,
                                                READY_AT + stage.name: time.time()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks = _from_column(batch)
        for chunk in chunks:
            self.stage.run(chunk.samples, self.reporter)
        if self.reporter:
            self.reporter.flush()
        if self.stamps and chunks:
            chunks[0].stamps.update(self.stamps)
            self.stamps = None
        return _as_column(chunks)


def resolve_gpus(res: StageResources) -> float:
    """'auto' asks the cluster (not the driver's CUDA) whether it has GPUs to give."""
    if res.num_gpus == "auto":
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return float(res.num_gpus)


@contextmanager
def _plan_without_deprecation() -> Iterator[None]:
    """Ray 2.60 deprecates passing remote options as `**ray_remote_args` but gives task retries and actor
    restarts no named parameter (its named ones: label_selector, fallback_strategy, max_calls, resources,
    accelerator_type, runtime_env). Until it does, `execution.max_retries` and `max_actor_restarts` still
    travel that way, without a warning per plan; any other deprecation still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
        yield


@ray.remote(num_cpus=0)
class _NoticeSpender:
    def __init__(self, _ref: Any) -> None:
        pass

    def ready(self) -> bool:
        return True


_notice_spent = False       # Ray logs the notice once per process, across ray.init()s
_notice_spender: Any = None  # the no-op actor, while it lives on a cluster we joined


def _spend_restart_notice() -> None:
    """Ray Data hands its UDF and DataContext to every pool actor by ObjectRef and enables restarts, so the
    first pool actor of a process makes Ray core log an ERROR ("has constructor arguments in the object store
    and max_restarts > 0", ray-project/ray#53727), whatever the UDF's size: ray-project/ray#57733, open. The
    risk it names does not apply here, since the operator holds those refs for the whole plan (node-loss tests
    restart actors). Ray logs it once per process: a no-op actor created the same way, with stderr pointed at
    /dev/null for that one call, spends it, so a healthy run prints no error. Any other error still shows."""
    global _notice_spent, _notice_spender
    if _notice_spent:
        return
    ref = ray.put(None)
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        _notice_spender = _NoticeSpender.options(max_restarts=1).remote(ref)
        _notice_spent = True
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _release_notice_spender() -> None:
    """On a cluster we joined, remove the no-op actor once it is up (killing one still being placed makes the
    GCS log an error of its own); a Ray we started goes with its shutdown."""
    global _notice_spender
    if _notice_spender is None:
        return
    try:
        ray.get(_notice_spender.ready.remote(), timeout=10)
        ray.kill(_notice_spender)
    except Exception as exn:   # noqa: BLE001 - cleanup must not mask the run's outcome
        logger.debug("could not remove the no-op actor: %s", exn)
    _notice_spender = None


def _keep_task_workers(cfg: RunConfig) -> None:
    """For a Ray we start: Ray kills idle workers beyond one per CPU after a second, and a stage's next task then
    starts a new worker that imports torch again (~4 s of CPU). Besides the stage actors, a plan keeps a few task
    workers busy by turns; on a small machine that churn ate a quarter of the CPU. Allow as many workers as the
    plan can use at once (RAY_num_workers_soft_limit; a value set in the environment is kept)."""
    pools = sum(res.concurrency for res in cfg.running_resources())
    os.environ.setdefault("RAY_num_workers_soft_limit", str((os.cpu_count() or 1) + pools + 2))


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C: committed shards stay, Ray is shut down
    in order. Ray's own handler would abort the process with a C++ stack dump instead."""
    raise KeyboardInterrupt(f"signal {signum}")


class RayExecutor:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.started_ray = False
        self.fixed_gpus = False   # True: the Ray this run started itself, whose GPUs are all it will ever have
        self.times = StartupTimes()
        self.received_bytes = 0   # the results the driver was sent: the whole of what it receives per chunk
        self._board: Any = None   # while a run's progress is followed: its ProgressBoard, and the driver's poller
        self._poller: BoardPoller | None = None

    def _init_ray(self) -> None:
        start = time.perf_counter()
        if not ray.is_initialized():
            address = self.cfg.execution.ray_address
            if address is None:
                _keep_task_workers(self.cfg)
            init_ray(address)
            self.started_ray = True
            # a Ray of our own never gains a GPU: a stage asking for more than it has would wait forever
            self.fixed_gpus = address is None and not os.environ.get("RAY_ADDRESS")
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _terminate)
        _spend_restart_notice()
        self.times.ray_startup = time.perf_counter() - start
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = False
        # one bar, drawn by the caller from committed shards: Ray Data's per-operator bars would name our stages
        # MapBatches(_StageActor), and off a terminal they become log lines
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False
        from ray.util.debug import log_once

        log_once("ray_data_progress_manager_disabled")   # spends Ray's warning that we turned them off

    def _apply(self, ds: ray.data.Dataset, stage: Stage, board: Any) -> ray.data.Dataset:
        """One row is one chunk: a stage's call gets one chunk and works through it in its own batch size."""
        res = stage.resources
        gpus, have = resolve_gpus(res), ray.cluster_resources().get("GPU", 0)
        if self.fixed_gpus and gpus > have:
            raise ConfigError(f"execution.{stage.name}.num_gpus={res.num_gpus}: the local Ray this run started has "
                              f"{have:g} GPUs; use 0 (the CPU) or auto, or join a cluster that has them "
                              "(execution.ray_address)")
        common = dict(batch_size=1, num_cpus=res.num_cpus, num_gpus=gpus, batch_format="numpy",
                      zero_copy_batch=False)
        ex = self.cfg.execution
        if stage.loads_models:
            # a dead actor (its worker or node lost) is restarted and its in-flight calls are retried until it is
            # back (max_actor_restarts bounds that): while a lost node is not yet declared dead, each call to its
            # actors fails at once as "unavailable", so a count of retries would run out in milliseconds
            return ds.map_batches(_StageActor, fn_constructor_args=(stage, board),
                                  compute=ray.data.ActorPoolStrategy(size=res.concurrency),
                                  max_restarts=ex.max_actor_restarts, max_task_retries=-1, **common)
        return ds.map_batches(_run_task_stage, fn_kwargs={"stage": stage, "board": board},
                              compute=ray.data.TaskPoolStrategy(size=res.concurrency),
                              max_retries=ex.max_retries, **common)

    def _write(self, ds: ray.data.Dataset, writer: ShardWriter) -> ray.data.Dataset:
        """Writing is I/O: a retried write rewrites the same files, and only its marker commits a shard."""
        res = writer.resources
        return ds.map_batches(_write_rows, fn_kwargs={"writer": writer}, batch_size=1, batch_format="numpy",
                              num_cpus=res.num_cpus, compute=ray.data.TaskPoolStrategy(size=res.concurrency),
                              max_retries=self.cfg.execution.max_retries, zero_copy_batch=False)

    def start(self, on_phase: PhaseCallback | None = None) -> None:
        """Start (or join) Ray; timed as the run's Ray start-up."""
        if on_phase and not ray.is_initialized():
            on_phase("starting ray")
        self._init_ray()

    def run(self, tasks, flow: Flow, on_phase: PhaseCallback | None = None,
            on_progress: ProgressCallback | None = None) -> Iterator[WriteResult]:
        """Build and stream the plan; tells `on_phase` "mining" once every model stage has an actor ready, and
        `on_progress` (from another thread: see `mining.executors.ray_progress`) of the stages' batches."""
        phase = on_phase or (lambda name: None)
        if not ray.is_initialized():
            self.start(on_phase)
        if on_progress is not None:
            self._board = open_board()
            self._poller = BoardPoller(self._board, on_progress)
        items = [{"uri": t.uri, "max_samples": t.max_samples} for t in tasks]
        with _plan_without_deprecation():
            ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
            # reading is I/O-bound: a full CPU per read task would starve the actor pools on small machines
            ds = ds.flat_map(_read_rows, fn_kwargs={"reader": flow.reader}, num_cpus=flow.reader.resources.num_cpus,
                             max_retries=self.cfg.execution.max_retries)
            for stage in flow.stages:
                ds = self._apply(ds, stage, self._board)
            ds = self._write(ds, flow.writer)
        waiting = {s.name for s in flow.stages if s.loads_models}   # model stages with no actor ready yet
        plan_start = time.time()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for raw in batch["result"]:
                self.received_bytes += len(raw)
                result = WriteResult.from_json(raw)
                self.times.absorb(result.stamps)
                if waiting and waiting <= set(self.times.ready_at):
                    # wall clocks of different nodes: close enough for seconds, never negative
                    self.times.model_loading = max(0.0, max(self.times.ready_at.values()) - plan_start)
                    waiting = set()
                    phase("mining")
                yield result
        self._stop_following()
        logger.info("ray executor finished %d shard(s)", len(tasks))

    def _stop_following(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if self._board is not None:
            try:
                ray.kill(self._board)
            except Exception as exn:   # noqa: BLE001 - cleanup must not mask the run's outcome
                logger.debug("could not remove the progress board: %s", exn)
            self._board = None

    def close(self) -> None:
        """Shut down the Ray this executor started (a cluster it joined is left alone). A second SIGTERM
        during shutdown is ignored: interrupting it would leave Ray's agent processes behind."""
        if not ray.is_initialized():
            return
        self._stop_following()
        if not self.started_ray:
            _release_notice_spender()
            return
        global _notice_spender
        _notice_spender = None
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if main else None
        try:
            shutdown_ray()
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous if previous is not _terminate else signal.SIG_DFL)
