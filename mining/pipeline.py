"""The mining run: expand inputs, run the stages through an executor, write each shard as it completes,
aggregate the manifest. Data flows one way:

    read -> decode -> entities -> teacher -> regions -> match -> write

Entities run before the teacher (the papers' figure draws them side by side): a caption with no visual noun
then costs no GPU time, and the CLIP actor can embed both masks and entity texts in one place.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mining.config import RunConfig
from mining.logs import logger
from mining.sinks.commits import committed_markers, manifest_if_current, refuse_foreign_leftovers, reusable
from mining.sinks.layout import OUTPUT_FOLDERS, manifest_uri, marker_uri, refuse_inputs_inside
from mining.sinks.lease import OutputLease
from mining.sinks.manifest import build_manifest, write_manifest
from mining.sinks.writer import write_shard
from mining.sources.shards import count_keys
from mining.sources.uris import expand_inputs, shard_stem
from mining.stage import Stage
from mining.storage import S3Options, delete, sweep_temporaries


def build_stages(cfg: RunConfig) -> list[Stage]:
    # imported here: torch, open_clip and spaCy take seconds to import, and a bad input should fail at once
    from mining.entities import EntityStage
    from mining.match_stage import MatchStage
    from mining.regions import RegionStage
    from mining.sources.decode import DecodeStage
    from mining.teachers import TeacherStage

    return [DecodeStage(cfg), EntityStage(cfg), TeacherStage(cfg), RegionStage(cfg), MatchStage(cfg)]


@dataclass(frozen=True)
class ShardTask:
    uri: str
    max_samples: int | None = None   # set by --limit on the shard where the limit is reached


def plan_tasks(shards: list[str], limit: int | None, s3: S3Options | None) -> list[ShardTask]:
    """With a limit, the first `limit` images in input order: whole shards, then part of the last one."""
    if limit is None:
        return [ShardTask(uri) for uri in shards]
    tasks, left = [], limit
    for uri in shards:
        if left <= 0:
            break
        n = count_keys(uri, s3, stop_after=left)
        tasks.append(ShardTask(uri, left if n >= left else None))
        left -= n
    return tasks


def make_executor(cfg: RunConfig, s3: S3Options, progress: bool = False):
    if cfg.execution.executor == "local":
        from mining.executors.local import LocalExecutor

        return LocalExecutor(cfg, s3)
    from mining.executors.ray_data import RayExecutor

    return RayExecutor(cfg, s3, progress=progress)


def run_mining(cfg: RunConfig, inputs: list[str], output: str, limit: int | None = None,
               on_shard: Callable[[dict[str, Any]], None] | None = None, progress: bool = False,
               overwrite: bool = False) -> dict[str, Any]:
    """Mine `inputs` into `output`; returns the manifest. Bad inputs and an output that cannot be written (or
    that another run holds, or that holds the inputs) raise before any model is loaded.

    The output is every shard committed in it with this config: shards already committed are skipped (a
    rerun finishes an interrupted run, a whole shard stands for any --limit cut of it), `overwrite` mines the
    planned shards again. An output holding another config's shards is refused. Shards that could not be
    read are not committed; they are listed in the manifest's `failed_shards` and a rerun retries them."""
    s3 = S3Options.from_source(cfg.source)
    shards = expand_inputs(inputs, s3)
    refuse_inputs_inside(output, shards)
    tasks = plan_tasks(shards, limit, s3)
    config_hash = cfg.config_hash()
    with OutputLease(output, config_hash, s3):
        if swept := sweep_temporaries(output, OUTPUT_FOLDERS):
            logger.info("removed %d temporary file(s) left in %s by an earlier run", swept, output)
        wanted = {shard_stem(t.uri): t.max_samples for t in tasks}
        previous = None if overwrite else manifest_if_current(output, config_hash, s3)
        if previous is not None:
            described = {s["name"]: s | {"config_hash": config_hash} for s in previous["shards"]}
            if reusable(described, wanted, config_hash, output) == set(wanted):
                # the listing matches the manifest and every planned shard is committed: nothing to read or write
                logger.info("all %d planned shard(s) are committed in %s; nothing to mine", len(wanted), output)
                return previous
        markers = committed_markers(output, s3)
        if overwrite:
            refuse_foreign_leftovers(markers, wanted, config_hash, output)
        done = set() if overwrite else reusable(markers, wanted, config_hash, output)
        todo = [t for t in tasks if shard_stem(t.uri) not in done]
        logger.info("mining %d shard(s) into %s with config %s (%d already committed)", len(todo), output,
                    config_hash, len(done))
        start = time.perf_counter()
        mined_images, failed = 0, []
        if todo:
            # the manifest stops describing the output once a shard is written: a run killed from here on leaves
            # none, so the next run reads every marker instead of trusting a stale summary
            delete(manifest_uri(output), s3)
            limits = {shard_stem(t.uri): t.max_samples for t in todo}
            executor = make_executor(cfg, s3, progress)
            try:
                for samples in executor.run(todo, build_stages(cfg)):
                    if samples[0].read_error is not None:
                        failed.append({"input": samples[0].shard, "name": samples[0].shard_stem,
                                       "error": samples[0].read_error})
                        continue
                    if samples[0].shard_stem in markers:   # uncommit before replacing the shard's files
                        delete(marker_uri(output, samples[0].shard_stem), s3)
                        del markers[samples[0].shard_stem]
                    marker = write_shard(samples, output, cfg, config_hash, s3,
                                         limit=limits[samples[0].shard_stem])
                    markers[marker["name"]] = marker
                    mined_images += marker["images_in"]
                    if on_shard:
                        on_shard(marker)
            finally:
                executor.close()
        manifest = build_manifest(output, sorted(markers), cfg, time.perf_counter() - start, s3,
                                  images_this_run=mined_images, markers=markers,
                                  failed=sorted(failed, key=lambda f: f["name"]))
        write_manifest(output, manifest, s3)
    return manifest
