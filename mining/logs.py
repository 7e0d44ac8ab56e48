"""The one logger ("ovmine": every module logs through it; the CLI configures it, a library user's logging
config decides otherwise), and rate-limited warnings so that a million bad samples do not flood a log."""
from __future__ import annotations

import logging
import time

logger = logging.getLogger("ovmine")
logger.addHandler(logging.NullHandler())


class RateLimitedWarning:
    """Logs the first `burst` warnings of a kind, then at most one per `interval` seconds with a count."""

    def __init__(self, burst: int = 5, interval: float = 30.0) -> None:
        self.burst = burst
        self.interval = interval
        self._seen: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def __call__(self, kind: str, message: str) -> None:
        n = self._seen.get(kind, 0) + 1
        self._seen[kind] = n
        now = time.monotonic()
        if n <= self.burst or now - self._last.get(kind, 0.0) >= self.interval:
            self._last[kind] = now
            suffix = f" ({n} so far)" if n > self.burst else ""
            logger.warning("%s%s", message, suffix)


warn_limited = RateLimitedWarning()
