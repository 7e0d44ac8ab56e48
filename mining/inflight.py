"""Work on shards not yet committed, for the progress display only: stages report each batch they finish (a
`Passed`), and `InFlight` turns the reports into images' worth of work done per shard. A chunk moves between
stages whole, so images leave the last stage a chunk at a time; counting every stage's batches, weighted by
what a sample costs there, is what lets the bar move within a shard. Committed shards are counted from their
markers, never from here: `close` forgets a shard once it is committed or failed, and later (retried, late)
reports of it are ignored, so the display cannot overshoot."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Passed:
    """`samples` of shard `shard` (which holds `size`) went through stage `stage`: `worked` live ones it worked
    on for `seconds`, the others dropped before it (they pass it untouched)."""
    shard: str
    size: int
    stage: str
    samples: int
    worked: int
    seconds: float


class InFlight:
    def __init__(self, stages: Iterable[str]) -> None:
        self.stages = list(stages)
        self.passed: dict[str, Counter] = {}   # shard -> stage -> samples through it
        self.size: dict[str, int] = {}
        self.closed: set[str] = set()
        self.seconds: Counter = Counter()      # per stage, over every shard: what a sample costs there
        self.worked: Counter = Counter()

    def add(self, reports: Iterable[Passed]) -> None:
        for r in reports:
            self.seconds[r.stage] += r.seconds
            self.worked[r.stage] += r.worked
            if r.shard not in self.closed:
                self.size[r.shard] = r.size
                self.passed.setdefault(r.shard, Counter())[r.stage] += r.samples

    def close(self, shard: str) -> None:
        """The shard was committed or failed: its figures now come from the driver, not from here."""
        self.closed.add(shard)
        self.passed.pop(shard, None)
        self.size.pop(shard, None)

    def weights(self) -> dict[str, float]:
        """Seconds per sample of each stage so far; a stage not yet heard from counts as the mean of the others."""
        known = {s: self.seconds[s] / self.worked[s] for s in self.stages if self.worked[s] and self.seconds[s] > 0}
        default = sum(known.values()) / len(known) if known else 1.0
        return {s: known.get(s, default) for s in self.stages}

    def snapshot(self) -> dict[str, tuple[float, int]]:
        """Per shard in flight: (images' worth of its work done, images it holds); never more than it holds
        (a retried batch reports twice)."""
        w = self.weights()
        total = sum(w.values()) or 1.0
        done = {shard: sum(w[s] * min(n, self.size[shard]) for s, n in passed.items() if s in w) / total
                for shard, passed in self.passed.items()}
        return {shard: (min(d, self.size[shard]), self.size[shard]) for shard, d in done.items()}   # float sums
