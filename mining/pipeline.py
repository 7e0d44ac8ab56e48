"""The mining run, as the driver sees it: expand the inputs, plan the shards still to mine, hand them to an
executor that reads, mines, writes and commits them on its workers (the flow is in `mining.stages`), hear
back each committed shard's marker, and write the manifest."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mining.config import RunConfig
from mining.executors import StartupTimes
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
from mining.stages import build_stages
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


def make_executor(cfg: RunConfig):
    if cfg.execution.executor == "local":
        from mining.executors.local import LocalExecutor

        return LocalExecutor(cfg)
    from mining.executors.ray_data import RayExecutor

    return RayExecutor(cfg)


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
    replaces the config's stages (the toy world's oracle writes its ground truth this way)."""
    listener = MiningProgress() if progress is None or isinstance(progress, bool) else progress
    s3 = S3Options.from_config(cfg.storage)
    output = Location.of(output, s3)
    shards = expand_inputs(inputs, s3)
    check_folder_output(output, MINED, shards, overwrite, noun="input shard")
    tasks = plan_tasks(shards, limit, s3)
    config_hash = cfg.config_hash()
    with OutputLease(output, config_hash):
        if swept := output.sweep_temporaries(OUTPUT_FOLDERS):
            logger.info("removed %d temporary file(s) left in %s by an earlier run", swept, output)
        output.join(PARTS).delete_tree()   # parts an earlier run left behind were never committed
        wanted = {shard_stem(t.uri): t.max_samples for t in tasks}
        previous = None if overwrite else manifest_if_current(output, config_hash)
        if previous is not None:
            described = {s["name"]: s | {"config_hash": config_hash} for s in previous["shards"]}
            if reusable(described, wanted, config_hash, output) == set(wanted):
                # the listing matches the manifest and every planned shard is committed: nothing to read or write
                logger.info("all %d planned shard(s) are committed in %s; nothing to mine", len(wanted), output)
                listener.planned(len(wanted), len(wanted), 0)
                return previous
        damaged: list[str] = []
        markers = committed_markers(output, damaged=damaged)
        for stem in damaged:   # uncommitted: the shard is mined again if planned, and left out otherwise
            marker_file(output, stem).delete()
        if overwrite:
            refuse_foreign_leftovers(markers, wanted, config_hash, output)
        done = set() if overwrite else reusable(markers, wanted, config_hash, output)
        todo = [t for t in tasks if shard_stem(t.uri) not in done]
        logger.info("mining %d shard(s) into %s with config %s (%d already committed)", len(todo), output,
                    config_hash, len(done))
        counted = [t.images for t in todo]
        listener.planned(len(tasks), len(done), None if None in counted else sum(counted))
        start = time.perf_counter()
        mined_images, failed = 0, []
        times, imports, driver = None, 0.0, {}
        if todo:
            # the manifest stops describing the output once a shard is written: a run killed from here on leaves
            # none, so the next run reads every marker instead of trusting a stale summary
            manifest_file(output).delete()
            for task in todo:   # --overwrite: uncommit before the workers replace a shard's files
                if markers.pop(shard_stem(task.uri), None) is not None:
                    marker_file(output, shard_stem(task.uri)).delete()
            executor = make_executor(cfg)
            times = executor.times
            try:
                executor.start(listener.phase)
                listener.phase("loading models")
                before = time.perf_counter()
                stages = stages or build_stages(cfg)   # imports torch, open_clip, spaCy: part of loading the models
                imports = time.perf_counter() - before
                writer = ShardWriter.from_config(cfg, output.absolute(), config_hash)
                follow = _Follow(listener, [s.name for s in stages])
                on_progress = follow.progressed if getattr(listener, "shows_in_flight", False) else None
                cpu_start = time.process_time()   # the driver's own work while it streams (Ray Data's threads too)
                for result in executor.run(todo, stages, writer, on_phase=follow.phase, on_progress=on_progress):
                    with follow.lock:
                        if result.failed is not None:
                            failed.append(result.failed)
                            follow.flight.close(result.failed["name"])
                            listener.failed(result.failed)
                        elif result.committed is not None and result.committed["name"] not in markers:
                            # (two writes that complete a chunked shard together both report it: counted once)
                            marker = result.committed
                            markers[marker["name"]] = marker
                            mined_images += marker["images_in"]
                            follow.flight.close(marker["name"])
                            listener.committed(marker)
                            if on_shard:
                                on_shard(marker)
            finally:
                executor.close()
                output.join(PARTS).delete_tree()   # parts of shards the run did not finish: never committed
            driver = {"received_bytes": executor.received_bytes,
                      "cpu_seconds": round(time.process_time() - cpu_start, 3)}
        wall = time.perf_counter() - start
        manifest = build_manifest(output, sorted(markers), cfg, wall,
                                  images_this_run=mined_images, markers=markers,
                                  failed=sorted(failed, key=lambda f: f["name"]),
                                  previous=previous)   # deleted above once writing began; its throughput lives on
        if times is not None and mined_images:   # a run that mined nothing measured no throughput to explain
            manifest["timings"] |= startup_timings(times, manifest["wall_seconds"], imports)
            manifest["driver"] = driver | {"bytes_per_image": round(driver["received_bytes"] / mined_images, 1),
                                           "cpu_seconds_per_1000_images":
                                               round(1000 * driver["cpu_seconds"] / mined_images, 3)}
            validate("manifest", manifest)
        write_manifest(output, manifest)
    return manifest
