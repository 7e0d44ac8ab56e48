"""Sequential in-process execution: the same read, stages and write, no Ray. For tests, debugging and profiling."""
from __future__ import annotations

import time
from collections.abc import Iterator

from mining.config import RunConfig
from mining.executors import PhaseCallback, ProgressCallback, StartupTimes
from mining.stages import Flow
from mining.stages.write import WriteResult


class LocalExecutor:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.times = StartupTimes()
        self.received_bytes = 0   # what the writes' results would weigh on the wire, for comparison with Ray

    def start(self, on_phase: PhaseCallback | None = None) -> None:
        """Nothing to start: stages run in this process."""

    def run(self, tasks, flow: Flow, on_phase: PhaseCallback | None = None,
            on_progress: ProgressCallback | None = None) -> Iterator[WriteResult]:
        """Load every step's models, then mine chunk after chunk; tells `on_phase` "mining" in between, and
        `on_progress` of each stage's batches as they are done."""
        on_batch = (lambda passed: on_progress([passed])) if on_progress else None
        start = time.perf_counter()
        for step in flow.steps():
            step.prepare()
        self.times.model_loading = time.perf_counter() - start
        self.times.setup = {s.name: s.setup_seconds for s in flow.steps() if s.loads_models}
        if on_phase:
            on_phase("mining")
        for task in tasks:
            for chunk in flow.reader.read(task.uri, task.max_samples):
                for stage in flow.stages:
                    stage.run(chunk.samples, on_batch)
                result = flow.writer.write(chunk)
                self.received_bytes += len(result.to_json(stamps=False))
                yield result

    def close(self) -> None:
        """Nothing to release: stages ran in this process."""
