"""The stage contract: picklable config in `__init__`, models loaded in `setup()` on the worker,
`process(samples)` fills in live samples. Stages never import Ray; executors decide where they run."""
from __future__ import annotations

from time import perf_counter

from mining.config import RunConfig
from mining.logs import logger, warn_limited
from mining.records import Drop, Sample


FLOW = ("decode", "entities", "teacher", "regions", "match")   # stage names, in the order data flows through them


class Stage:
    name: str = "stage"

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self._ready = False
        self.setup_seconds = 0.0   # wall seconds prepare() spent in setup() in this process

    def setup(self) -> None:
        """Load models; runs once per worker, after the stage has been shipped there."""

    @property
    def loads_models(self) -> bool:
        """Whether setup() does anything: such a stage wants a long-lived worker (an actor) that loads once."""
        return type(self).setup is not Stage.setup

    def prepare(self) -> None:
        """Run setup() once in this process and time it: executors call it up front, so that model loading
        is reported apart from the work (and a first batch does not carry its cost)."""
        if self._ready:
            return
        start = perf_counter()
        self.setup()
        self.setup_seconds = perf_counter() - start
        self._ready = True

    def process(self, samples: list[Sample]) -> None:
        """Work on live samples in place; drop a sample with `sample.drop_with(reason)`."""
        raise NotImplementedError

    def run(self, samples: list[Sample]) -> list[Sample]:
        """Process the live samples of a batch; dropped ones pass through untouched.

        If the batch raises, each sample is retried alone so that one poisoned sample is dropped as
        `stage_error` without taking the others with it.
        """
        self.prepare()
        live = [s for s in samples if s.alive]
        if not live:
            return samples
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
        per_sample = (perf_counter() - start) / len(live)
        for sample in live:
            sample.timings[self.name] = sample.timings.get(self.name, 0.0) + per_sample
        return samples
