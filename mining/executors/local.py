"""Sequential in-process execution: the same stages, no Ray. For tests, debugging and profiling."""
from __future__ import annotations

from collections.abc import Iterator

from mining.config import ExecutionConfig, RunConfig
from mining.records import Sample
from mining.sources.shards import read_shard
from mining.stage import Stage
from mining.storage import S3Options


def run_stages(samples: list[Sample], stages: list[Stage], execution: ExecutionConfig) -> list[Sample]:
    """Push one shard's samples through the stages, in each stage's configured batch size."""
    for stage in stages:
        size = execution.resources(stage.name).batch_size
        for start in range(0, len(samples), size):
            stage.run(samples[start:start + size])
    return samples


class LocalExecutor:
    def __init__(self, cfg: RunConfig, s3: S3Options) -> None:
        self.cfg, self.s3 = cfg, s3

    def run(self, tasks, stages: list[Stage]) -> Iterator[list[Sample]]:
        for task in tasks:
            yield run_stages(read_shard(task.uri, self.s3, task.max_samples), stages, self.cfg.execution)

    def close(self) -> None:
        """Nothing to release: stages ran in this process."""
