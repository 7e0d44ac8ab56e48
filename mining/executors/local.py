"""Sequential in-process execution: the same stages, no Ray. For tests, debugging and profiling."""
from __future__ import annotations

import time
from collections.abc import Iterator

from mining.config import ExecutionConfig, RunConfig
from mining.executors import MinedShard, PhaseCallback, StartupTimes
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
        self.times = StartupTimes()

    def start(self, on_phase: PhaseCallback | None = None) -> None:
        """Nothing to start: stages run in this process."""

    def run(self, tasks, stages: list[Stage], on_phase: PhaseCallback | None = None) -> Iterator[MinedShard]:
        """Load every stage's models, then mine shard after shard; tells `on_phase` "mining" in between."""
        start = time.perf_counter()
        for stage in stages:
            stage.prepare()
        self.times.model_loading = time.perf_counter() - start
        self.times.setup = {s.name: s.setup_seconds for s in stages if s.loads_models}
        if on_phase:
            on_phase("mining")
        for task in tasks:
            started = time.time()
            samples = read_shard(task.uri, self.s3, task.max_samples)
            yield MinedShard(run_stages(samples, stages, self.cfg.execution), started)

    def close(self) -> None:
        """Nothing to release: stages ran in this process."""
