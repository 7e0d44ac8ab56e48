"""How the stages' batch reports (`mining.inflight.Passed`) reach the driver on Ray, for the progress display.

The results stream brings nothing back until a chunk is written, so workers post their reports to a small
actor instead (`ProgressBoard`, no CPU of its own), summed per shard and stage and at most every FLUSH_S
seconds per worker, and a thread of the driver takes them from it every POLL_S seconds. A report that is lost
(a worker that dies before its flush) only makes the display lag: committed shards are counted from markers."""
from __future__ import annotations

import threading
import time
from typing import Any

import ray

from mining.executors import ProgressCallback
from mining.inflight import Passed
from mining.logs import logger

FLUSH_S = 0.5   # a worker posts at most this often, and at the end of each chunk
POLL_S = 0.5    # the driver takes what was posted this often


def open_board() -> Any:
    """A ProgressBoard on the driver's own node (softly): the one a run cannot lose without losing the driver."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ProgressBoard.options(scheduling_strategy=here).remote()


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self) -> None:
        self.reports: list[Passed] = []

    def post(self, reports: list[Passed]) -> None:
        self.reports.extend(reports)

    def take(self) -> list[Passed]:
        taken, self.reports = self.reports, []
        return taken


class BatchReporter:
    """On a worker: a stage's `on_batch`, summing reports per (shard, stage) until the next post."""

    def __init__(self, board: Any) -> None:
        self.board = board
        self.pending: dict[tuple[str, str], Passed] = {}
        self.posted = time.monotonic()

    def __call__(self, p: Passed) -> None:
        key = (p.shard, p.stage)
        if (q := self.pending.get(key)) is not None:
            p = Passed(p.shard, p.size, p.stage, q.samples + p.samples, q.worked + p.worked, q.seconds + p.seconds)
        self.pending[key] = p
        if time.monotonic() - self.posted >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.board.post.remote(list(self.pending.values()))   # fire and forget: no reply is waited for
            self.pending = {}
        self.posted = time.monotonic()


class BoardPoller:
    """On the driver: takes the board's reports every POLL_S seconds and hands them to `on_progress` (from this
    thread). A display must never break a run: if taking fails, the thread logs it and stops."""

    def __init__(self, board: Any, on_progress: ProgressCallback) -> None:
        self.board, self.on_progress = board, on_progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ovmine-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                reports = ray.get(self.board.take.remote(), timeout=30)
            except ray.exceptions.GetTimeoutError:   # the board still being placed on a busy cluster
                continue
            except Exception as exn:   # noqa: BLE001 - Ray shutting down under us, or the board lost
                logger.debug("progress reports no longer reach the driver: %s", exn)
                return
            if reports and not self._stop.is_set():
                self.on_progress(reports)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
