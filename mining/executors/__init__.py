"""How the flow runs: sequentially in-process (local) or as a Ray Data plan (ray). Only this package imports Ray.

Both executors have `start(on_phase)` (Ray's start-up, or nothing), `run(tasks, flow, on_phase, on_progress)`,
which reads each task's shard in chunks with the flow's reader, passes every chunk through its stages and its
writer where the work happens, and yields what each write returns (a committed shard's marker, a written part, or a
shard that could not be read: see `mining.stages.write`), and `close()`. `on_progress`, if given, hears of the
stages' batches as they are done (`mining.inflight.Passed`), for the progress display: on Ray a few times a
second, from a thread of the driver's own. They fill in `times` (a `StartupTimes`) as they go, so
that a run can report where its wall time went (start-up and model loading apart from the mining itself), and
count in `received_bytes` what the driver was sent."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mining.inflight import Passed

if TYPE_CHECKING:   # for annotations only: importing them here would load every stage's libraries
    from mining.config import RunConfig
    from mining.stages import Flow
    from mining.stages.write import WriteResult

PhaseCallback = Callable[[str], None]   # told "starting ray", "loading models", "mining" as a run gets there
ProgressCallback = Callable[[list[Passed]], None]   # told of stage batches done: a display's figures, not a count

# The keys of a chunk's executor stamps (ShardChunk.stamps), set by a model stage's actor on the first chunk it
# works on and sent back with the write's result: how long its setup() took, and when it was ready.
SETUP_S = "setup_s:"         # + stage name: seconds one actor spent in setup()
READY_AT = "ready_at:"       # + stage name: epoch seconds that actor finished setup()


@dataclass
class StartupTimes:
    """Where a run's fixed cost went: wall seconds, except `setup`, which sums worker seconds per stage."""
    ray_startup: float = 0.0      # starting (or joining) Ray
    model_loading: float = 0.0    # from the plan's start until every stage could work
    setup: dict[str, float] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)   # per model stage: when its first actor was ready

    def absorb(self, stamps: dict[str, float]) -> None:
        """Take in the stamps a write result carried back."""
        for key, value in stamps.items():
            if key.startswith(SETUP_S):
                name = key[len(SETUP_S):]
                self.setup[name] = self.setup.get(name, 0.0) + value
            elif key.startswith(READY_AT):
                name = key[len(READY_AT):]
                self.ready_at[name] = min(value, self.ready_at.get(name, value))


class Executor(Protocol):
    """What `mining.pipeline` asks of an executor (see the module docstring)."""

    times: StartupTimes
    received_bytes: int

    def start(self, on_phase: PhaseCallback | None = None) -> None: ...

    def run(self, tasks: list, flow: Flow, on_phase: PhaseCallback | None = None,
            on_progress: ProgressCallback | None = None) -> Iterator[WriteResult]: ...

    def close(self) -> None: ...


def make_executor(cfg: RunConfig) -> Executor:
    """The executor `execution.executor` names, imported only when chosen (the Ray one imports Ray)."""
    if cfg.execution.executor == "local":
        from mining.executors.local import LocalExecutor

        return LocalExecutor(cfg)
    from mining.executors.ray_data import RayExecutor

    return RayExecutor(cfg)
