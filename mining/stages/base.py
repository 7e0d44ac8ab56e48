"""The stage contract. A stage describes itself: `from_config` takes its own section of the run's config and
its resources (`execution.<name>`: CPUs, GPUs, concurrency, and the batch size it works in); `setup()`, if a
stage has one, loads models once on the worker, and such a stage wants a long-lived actor; `process(samples)`
fills in live samples. Stages never import Ray; executors decide where they run from what stages declare.

A stage also declares the `Sample` fields it `reads` and those it `fills` on every sample it keeps alive;
`run` holds it to both (`StageContractError`, a bug, never bad input), and `mining.stages.check_flow` checks
that every field a stage reads is filled by the reader or a stage before it."""
from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import ClassVar

from mining.config import RunConfig, StageResources
from mining.inflight import Passed
from mining.logs import logger, warn_limited
from mining.records import Drop, Sample


class StageContractError(RuntimeError):
    """A stage was given a sample without a field it reads, or kept one alive without a field it fills."""


def filled(sample: Sample, name: str) -> bool:
    """Whether `sample.<name>` holds something: set, and not an empty list, dict or array."""
    value = getattr(sample, name)
    return value is not None and (not hasattr(value, "__len__") or len(value) > 0)


class Step:
    """What every step of the flow has, the reader and the writer included: a name, which also names its
    resources (`execution.<name>`), those resources, and an optional `setup()` that `prepare()` runs and times
    once per worker."""
    name: ClassVar[str] = "step"

    def __init__(self, resources: StageResources) -> None:
        self.resources = resources
        self._ready = False
        self.setup_seconds = 0.0   # wall seconds prepare() spent in setup() in this process

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "Step":
        """The step built from its own section of `cfg` and its `execution.<name>` resources; a step with no
        section of its own needs nothing more than this."""
        return cls(cfg.execution.resources(cls.name))

    def setup(self) -> None:
        """Load models; runs once per worker, after the stage has been shipped there."""

    @property
    def loads_models(self) -> bool:
        """Whether setup() does anything: such a stage wants a long-lived worker (an actor) that loads once."""
        return type(self).setup is not Step.setup

    def prepare(self) -> None:
        """Run setup() once in this process and time it: executors call it up front, so that model loading
        is reported apart from the work (and a first batch does not carry its cost)."""
        if self._ready:
            return
        start = perf_counter()
        self.setup()
        self.setup_seconds = perf_counter() - start
        self._ready = True


class Stage(Step):
    """A step between the reader and the writer: works on a chunk's live samples, in batches."""
    name: ClassVar[str] = "stage"
    reads: ClassVar[tuple[str, ...]] = ()   # Sample fields a live sample must hold when it reaches this stage
    fills: ClassVar[tuple[str, ...]] = ()   # Sample fields every sample it keeps alive holds when it leaves

    def process(self, samples: list[Sample]) -> None:
        """Work on a batch of live samples in place; drop a sample with `sample.drop_with(reason)`."""
        raise NotImplementedError

    def run(self, samples: list[Sample], on_batch: Callable[[Passed], None] | None = None) -> list[Sample]:
        """Process the live samples (one shard's: a chunk), `resources.batch_size` at a time; dropped ones pass
        through untouched. `on_batch` hears of each batch done, for the progress display."""
        self.prepare()
        live = [s for s in samples if s.alive]
        size = self.resources.batch_size
        passed = sum(not s.sentinel for s in samples) - len(live)   # dropped before this stage: through it too
        self._hold(live, self.reads, "reads")
        for start in range(0, len(live), size):
            batch = live[start:start + size]
            seconds = self._run_batch(batch)
            self._hold([s for s in batch if s.alive], self.fills, "fills")
            if on_batch:
                on_batch(Passed(batch[0].shard_stem, batch[0].shard_size, self.name, passed + len(batch), len(batch),
                                seconds))
                passed = 0
        if on_batch and passed:
            on_batch(Passed(samples[0].shard_stem, samples[0].shard_size, self.name, passed, 0, 0.0))
        return samples

    def _hold(self, samples: list[Sample], fields: tuple[str, ...], declared: str) -> None:
        for sample in samples:
            missing = [f for f in fields if not filled(sample, f)]
            if missing:
                when, wrong = ("reached", "the flow order") if declared == "reads" else ("left", "the stage")
                raise StageContractError(f"stage {self.name} {declared} {', '.join(missing)}, but sample "
                                         f"{sample.key} {when} it without: {wrong} is wrong")

    def _run_batch(self, live: list[Sample]) -> float:
        """If the batch raises, each sample is retried alone so that one poisoned sample is dropped as
        `stage_error` without taking the others with it. Returns the batch's wall seconds."""
        start = perf_counter()
        try:
            self.process(live)
        except Exception as exn:  # isolate the culprit, keep the rest
            logger.warning("stage %s failed on a batch of %d (%s); retrying one by one", self.name, len(live), exn)
            for sample in live:
                try:
                    self.process([sample])
                except Exception as one:
                    warn_limited(f"{self.name}-error", f"{self.name}: dropping {sample.shard}:{sample.key}: {one!r}")
                    sample.drop_with(Drop.STAGE_ERROR, f"{self.name}: {type(one).__name__}: {one}")
        seconds = perf_counter() - start
        for sample in live:
            sample.timings[self.name] = sample.timings.get(self.name, 0.0) + seconds / len(live)
        return seconds
