"""How stages run: sequentially in-process (local) or as a Ray Data plan (ray). Only this package imports Ray.

Both executors have `start(on_phase)` (Ray's start-up, or nothing), `run(tasks, stages, on_phase)`, which
yields each input shard's samples as a `MinedShard` once all of them have passed every stage, and `close()`;
they fill in `times` (a `StartupTimes`) as they go, so that a run can report where its wall time went
(start-up and model loading apart from the mining itself)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mining.records import Sample

PhaseCallback = Callable[[str], None]   # told "starting ray", "loading models", "mining" as a run gets there

# Executor-private stamps that ride on a sample's `timings` between workers and the driver (the only channel a
# sample has): popped by the executor before the samples are handed on, so they never reach a marker.
STAMP = "@"
READ_AT = STAMP + "read_at"          # epoch seconds a worker began reading the sample's shard
SETUP_S = STAMP + "setup_s:"         # + stage name: seconds one actor spent in setup()
READY_AT = STAMP + "ready_at:"       # + stage name: epoch seconds that actor finished setup()


@dataclass
class MinedShard:
    samples: list[Sample]
    started: float | None = None   # epoch seconds the shard's read began (None: not known)


@dataclass
class StartupTimes:
    """Where a run's fixed cost went: wall seconds, except `setup`, which sums worker seconds per stage."""
    ray_startup: float = 0.0      # starting (or joining) Ray
    model_loading: float = 0.0    # from the plan's start until every stage could work
    setup: dict[str, float] = field(default_factory=dict)


def pop_stamps(sample: Sample) -> dict[str, float]:
    """Remove the executor stamps from a sample's timings and return them."""
    return {key: sample.timings.pop(key) for key in [k for k in sample.timings if k.startswith(STAMP)]}
