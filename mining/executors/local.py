"""Sequential in-process execution: the same read, stages and write, no Ray. For tests, debugging and profiling."""
from __future__ import annotations

import time
from collections.abc import Iterator

from mining.config import RunConfig
from mining.executors import PhaseCallback, ProgressCallback, StartupTimes
from mining.stages.base import Stage
from mining.stages.read import read_chunks
from mining.stages.write import ShardWriter, WriteResult
from mining.storage import Location, S3Options


class LocalExecutor:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg, self.s3 = cfg, S3Options.from_config(cfg.storage)
        self.times = StartupTimes()
        self.received_bytes = 0   # what the writes' results would weigh on the wire, for comparison with Ray

    def start(self, on_phase: PhaseCallback | None = None) -> None:
        """Nothing to start: stages run in this process."""

    def run(self, tasks, stages: list[Stage], writer: ShardWriter, on_phase: PhaseCallback | None = None,
            on_progress: ProgressCallback | None = None) -> Iterator[WriteResult]:
        """Load every stage's models, then mine chunk after chunk; tells `on_phase` "mining" in between, and
        `on_progress` of each stage's batches as they are done."""
        on_batch = (lambda passed: on_progress([passed])) if on_progress else None
        start = time.perf_counter()
        for stage in stages:
            stage.prepare()
        self.times.model_loading = time.perf_counter() - start
        self.times.setup = {s.name: s.setup_seconds for s in stages if s.loads_models}
        if on_phase:
            on_phase("mining")
        for task in tasks:
            for chunk in read_chunks(Location.of(task.uri, self.s3), task.max_samples, self.cfg.execution.chunk_size):
                for stage in stages:
                    stage.run(chunk.samples, on_batch)
                result = writer.write(chunk)
                self.received_bytes += len(result.to_json(stamps=False))
                yield result

    def close(self) -> None:
        """Nothing to release: stages ran in this process."""
