"""The mining run, as the driver sees it: expand the inputs, plan the shards still to mine, hand them to an
executor that reads, mines, writes and commits them on its workers (the flow is in `mining.stages`), hear
back each committed shard's marker, and write the manifest."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mining.config import RunConfig
from mining.executors import StartupTimes, make_executor
from mining.inflight import InFlight, Passed
from mining.logs import logger
from mining.schemas import validate
from mining.sinks.commits import committed_markers, manifest_if_current, refuse_foreign_leftovers, reusable
from mining.sinks.guard import MINED, check_folder_output
from mining.sinks.layout import OUTPUT_FOLDERS, manifest_file, marker_file
from mining.sinks.lease import OutputLease
from mining.sinks.manifest import build_manifest, write_manifest
from mining.sinks.parts import PARTS
from mining.sources.shards import count_keys
from mining.sources.uris import expand_inputs, shard_stem
from mining.stages import Flow, build_stages, check_flow
from mining.stages.read import ShardReader
from mining.stages.write import ShardWriter
from mining.storage import Location, S3Options, Where


@dataclass(frozen=True)
class ShardTask:
    uri: str
    max_samples: int | None = None   # set by --limit on the shard where the limit is reached
    images: int | None = None        # images this task will read, when planning counted them (--limit)


def plan_tasks(shards: list[str], limit: int | None, s3: S3Options | None = None) -> list[ShardTask]:
    """With a limit, the first `limit` images in input order: whole shards, then part of the last one."""
    if limit is None:
        return [ShardTask(uri) for uri in shards]
    tasks, left = [], limit
    for uri in shards:
        if left <= 0:
            break
        n = count_keys(Location.of(uri, s3), stop_after=left)
        tasks.append(ShardTask(uri, left if n >= left else None, min(n, left)))
        left -= n
    return tasks


class MiningProgress:
    """What a mining run tells its caller as it goes (the CLI draws a bar or prints a line per shard; the
    library itself only logs). This base class ignores everything; a listener implements all five methods, and
    sets `shows_in_flight` if it wants `in_flight` called. Calls never overlap, but on Ray they may come from
    another thread than the caller's."""

    shows_in_flight = False

    def planned(self, shards: int, committed: int, images: int | None) -> None:
        """`shards` planned, of which `committed` are already in the output and are skipped; `images`: how
        many the others hold, when known (--limit counts them), else None."""

    def phase(self, name: str) -> None:
        """"starting ray", "loading models", "mining": where the run's time goes before the first shard."""

    def committed(self, marker: dict[str, Any]) -> None:
        """A shard was written and committed (its marker)."""

    def failed(self, failure: dict[str, str]) -> None:
        """A shard could not be read and was not committed (input, name, error); a rerun retries it."""

    def in_flight(self, shards: dict[str, tuple[float, int]]) -> None:
        """The shards in flight (not committed or failed yet) as (images' worth of work done, images it
        holds): a display's estimate (`mining.inflight`), replaced by the exact marker when a shard commits."""


class _Follow:
    """The listener's side of a run in progress: the work in flight, and one lock, since on Ray the stages'
    reports arrive on another thread than the results."""

    def __init__(self, listener: MiningProgress, stages: list[str]) -> None:
        self.listener, self.flight, self.lock = listener, InFlight(stages), threading.Lock()

    def phase(self, name: str) -> None:
        with self.lock:
            self.listener.phase(name)

    def progressed(self, reports: list[Passed]) -> None:
        with self.lock:
            self.flight.add(reports)
            self.listener.in_flight(self.flight.snapshot())


def startup_timings(times: StartupTimes, wall_seconds: float, imports: float = 0.0) -> dict[str, float]:
    """The run-level figures that join the manifest's `timings`: wall seconds of Ray start-up, model loading
    (`imports`: the driver importing the model libraries, plus the executor's loading) and the mining after them
    (the three add up to the run's wall time), and summed worker seconds of each stage's model loading. The bare
    stage names there stay summed worker seconds of stage work."""
    ray_startup, loading = round(times.ray_startup, 3), round(imports + times.model_loading, 3)
    figures = {"wall_ray_startup": ray_startup, "wall_model_loading": loading,
               "wall_mining": round(max(0.0, wall_seconds - ray_startup - loading), 3)}
    figures |= {f"setup_{stage}": round(s, 3) for stage, s in sorted(times.setup.items())}
    return figures


@dataclass
class Plan:
    """What a run is asked to do: the shards to read (with any --limit cut) into `output`, with this config."""
    output: Location
    tasks: list[ShardTask]
    config_hash: str

    @property
    def wanted(self) -> dict[str, int | None]:
        return {shard_stem(t.uri): t.max_samples for t in self.tasks}


@dataclass
class Reuse:
    """What the output already holds of the plan: `markers` of its committed shards (this config's), the tasks
    still `todo`, and the manifest of an earlier run if it still describes the output (`previous`)."""
    previous: dict[str, Any] | None
    markers: dict[str, dict[str, Any]] = field(default_factory=dict)
    todo: list[ShardTask] = field(default_factory=list)
    finished: bool = False   # every planned shard committed and the manifest current: nothing to do at all


@dataclass
class Execution:
    """What mining the `todo` shards gave: images mined, shards that could not be read, where the time went."""
    mined_images: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    times: StartupTimes | None = None
    imports: float = 0.0   # the driver importing the model libraries (part of loading the models)
    driver: dict[str, Any] = field(default_factory=dict)


def plan_run(cfg: RunConfig, inputs: list[str], output: Where, limit: int | None, overwrite: bool) -> Plan:
    """Expand the inputs and check the output may be written (the write guard): fails before any model loads."""
    s3 = S3Options.from_config(cfg.storage)
    output = Location.of(output, s3)
    shards = expand_inputs(inputs, s3)
    check_folder_output(output, MINED, shards, overwrite, noun="input shard")
    return Plan(output, plan_tasks(shards, limit, s3), cfg.config_hash())


def reuse_commits(plan: Plan, overwrite: bool) -> Reuse:
    """Clear what an earlier run left unfinished and find what it committed (call while holding the lease)."""
    output, config_hash, wanted = plan.output, plan.config_hash, plan.wanted
    if swept := output.sweep_temporaries(OUTPUT_FOLDERS):
        logger.info("removed %d temporary file(s) left in %s by an earlier run", swept, output)
    output.join(PARTS).delete_tree()   # parts an earlier run left behind were never committed
    previous = None if overwrite else manifest_if_current(output, config_hash)
    if previous is not None:
        described = {s["name"]: s | {"config_hash": config_hash} for s in previous["shards"]}
        if reusable(described, wanted, config_hash, output) == set(wanted):
            # the listing matches the manifest and every planned shard is committed: nothing to read or write
            logger.info("all %d planned shard(s) are committed in %s; nothing to mine", len(wanted), output)
            return Reuse(previous, finished=True)
    damaged: list[str] = []
    markers = committed_markers(output, damaged=damaged)
    for stem in damaged:   # uncommitted: the shard is mined again if planned, and left out otherwise
        marker_file(output, stem).delete()
    if overwrite:
        refuse_foreign_leftovers(markers, wanted, config_hash, output)
    done = set() if overwrite else reusable(markers, wanted, config_hash, output)
    todo = [t for t in plan.tasks if shard_stem(t.uri) not in done]
    logger.info("mining %d shard(s) into %s with config %s (%d already committed)", len(todo), output,
                config_hash, len(done))
    return Reuse(previous, markers, todo)


def execute(cfg: RunConfig, plan: Plan, reuse: Reuse, listener: MiningProgress,
            on_shard: Callable[[dict[str, Any]], None] | None, stages: list | None) -> Execution:
    """Mine the shards still to do on the configured executor; each committed shard's marker joins
    `reuse.markers` as it arrives."""
    output, markers = plan.output, reuse.markers
    # the manifest stops describing the output once a shard is written: a run killed from here on leaves none,
    # so the next run reads every marker instead of trusting a stale summary
    manifest_file(output).delete()
    for task in reuse.todo:   # --overwrite: uncommit before the workers replace a shard's files
        if markers.pop(shard_stem(task.uri), None) is not None:
            marker_file(output, shard_stem(task.uri)).delete()
    executor = make_executor(cfg)
    done = Execution(times=executor.times)
    try:
        executor.start(listener.phase)
        listener.phase("loading models")
        before = time.perf_counter()
        if stages is None:
            stages = build_stages(cfg)   # imports torch, open_clip, spaCy: part of loading the models
        else:
            check_flow(stages)
        done.imports = time.perf_counter() - before
        flow = Flow(ShardReader.from_config(cfg), stages,
                    ShardWriter.from_config(cfg, output.absolute(), plan.config_hash))
        follow = _Follow(listener, [s.name for s in stages])
        on_progress = follow.progressed if getattr(listener, "shows_in_flight", False) else None
        cpu_start = time.process_time()   # the driver's own work while it streams (Ray Data's threads too)
        for result in executor.run(reuse.todo, flow, on_phase=follow.phase, on_progress=on_progress):
            with follow.lock:
                if result.failed is not None:
                    done.failed.append(result.failed)
                    follow.flight.close(result.failed["name"])
                    listener.failed(result.failed)
                elif result.committed is not None and result.committed["name"] not in markers:
                    # (two writes that complete a chunked shard together both report it: counted once)
                    marker = result.committed
                    markers[marker["name"]] = marker
                    done.mined_images += marker["images_in"]
                    follow.flight.close(marker["name"])
                    listener.committed(marker)
                    if on_shard:
                        on_shard(marker)
    finally:
        executor.close()
        output.join(PARTS).delete_tree()   # parts of shards the run did not finish: never committed
    done.driver = {"received_bytes": executor.received_bytes, "cpu_seconds": round(time.process_time() - cpu_start, 3)}
    return done


def finalize(cfg: RunConfig, plan: Plan, reuse: Reuse, done: Execution, wall: float) -> dict[str, Any]:
    """The manifest of every committed shard, with this run's throughput and where its time went; written."""
    manifest = build_manifest(plan.output, sorted(reuse.markers), cfg, wall,
                              images_this_run=done.mined_images, markers=reuse.markers,
                              failed=sorted(done.failed, key=lambda f: f["name"]),
                              previous=reuse.previous)   # deleted once writing began; its throughput lives on
    if done.times is not None and done.mined_images:   # a run that mined nothing measured no throughput to explain
        manifest["timings"] |= startup_timings(done.times, manifest["wall_seconds"], done.imports)
        driver = done.driver
        manifest["driver"] = driver | {"bytes_per_image": round(driver["received_bytes"] / done.mined_images, 1),
                                       "cpu_seconds_per_1000_images":
                                           round(1000 * driver["cpu_seconds"] / done.mined_images, 3)}
        validate("manifest", manifest)
    write_manifest(plan.output, manifest)
    return manifest


def run_mining(cfg: RunConfig, inputs: list[str], output: Where, limit: int | None = None,
               on_shard: Callable[[dict[str, Any]], None] | None = None,
               progress: MiningProgress | bool | None = None, overwrite: bool = False,
               stages: list | None = None) -> dict[str, Any]:
    """Mine `inputs` into `output`; returns the manifest. Bad inputs and an output that cannot be written (or
    that another run holds, or that the write guard refuses: see `mining.sinks.guard`) raise before any model
    is loaded.

    The output is every shard committed in it with this config: shards already committed are skipped (a
    rerun finishes an interrupted run, a whole shard stands for any --limit cut of it), `overwrite` mines the
    planned shards again. An output holding another config's shards is refused. Shards that could not be
    read are not committed; they are listed in the manifest's `failed_shards` and a rerun retries them.

    `progress` hears about the plan, the phases and each shard (a bool, from older callers, shows nothing:
    Ray Data's own bars are never drawn); `on_shard` is called with each committed shard's marker. `stages`
    replaces the config's stages (the toy world's oracle writes its ground truth this way).

    The run is four steps: plan (inputs, guard), reuse (what the output holds, under its lease), execute (the
    shards still to do) and finalize (the manifest)."""
    listener = MiningProgress() if progress is None or isinstance(progress, bool) else progress
    plan = plan_run(cfg, inputs, output, limit, overwrite)
    with OutputLease(plan.output, plan.config_hash):
        reuse = reuse_commits(plan, overwrite)
        if reuse.finished:
            listener.planned(len(plan.tasks), len(plan.tasks), 0)
            return reuse.previous
        counted = [t.images for t in reuse.todo]
        listener.planned(len(plan.tasks), len(plan.tasks) - len(reuse.todo), None if None in counted else sum(counted))
        start = time.perf_counter()
        done = execute(cfg, plan, reuse, listener, on_shard, stages) if reuse.todo else Execution()
        return finalize(cfg, plan, reuse, done, time.perf_counter() - start)
