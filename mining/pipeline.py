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
from mining.sinks.commits import committed_markers, reusable
from mining.sinks.manifest import build_manifest, write_manifest
from mining.sinks.writer import write_shard
from mining.sources.shards import count_keys
from mining.sources.uris import expand_inputs, shard_stem
from mining.stage import Stage
from mining.storage import S3Options


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
    """Mine `inputs` into `output`; returns the manifest. Bad inputs raise before any model is loaded.

    Shards already committed with this config are skipped (a rerun finishes an interrupted run); `overwrite`
    mines everything again. An output holding another config's shards is refused."""
    s3 = S3Options.from_source(cfg.source)
    tasks = plan_tasks(expand_inputs(inputs, s3), limit, s3)
    config_hash = cfg.config_hash()
    done: set[str] = set()
    if not overwrite:
        done = reusable(committed_markers(output, s3), {shard_stem(t.uri): t.max_samples for t in tasks},
                        config_hash, output)
    todo = [t for t in tasks if shard_stem(t.uri) not in done]
    logger.info("mining %d shard(s) into %s with config %s (%d already committed)", len(todo), output,
                config_hash, len(done))
    start = time.perf_counter()
    stems = sorted(done)
    mined_images = 0
    if todo:
        limits = {shard_stem(t.uri): t.max_samples for t in todo}
        for samples in make_executor(cfg, s3, progress).run(todo, build_stages(cfg)):
            marker = write_shard(samples, output, cfg, config_hash, s3, limit=limits[samples[0].shard_stem])
            stems.append(marker["name"])
            mined_images += marker["images_in"]
            if on_shard:
                on_shard(marker)
    manifest = build_manifest(output, sorted(stems), cfg, time.perf_counter() - start, s3,
                              images_this_run=mined_images)
    write_manifest(output, manifest, s3)
    return manifest
