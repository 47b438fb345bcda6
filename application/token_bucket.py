"""Token buckets in process memory: `capacity` tries at once, refilled at `per_s` a second, per key.

Used for sign-in attempts (application/sessions.py) and request rate limits (api/ratelimit.py). In
memory on purpose: a check costs a dict lookup under a lock, no round trip; the price is that each
process keeps its own buckets (docs/auth.md says what that means for limits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_KEYS = 100_000  # bounded memory under a spray of keys


class TokenBucket:
    def __init__(self, capacity: float = 5, per_s: float = 1 / 12, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or per_s <= 0:
            raise ValueError(f"a bucket needs capacity >= 1 and a positive refill rate, got {capacity}, {per_s}")
        self.capacity, self.per_s, self._clock = capacity, per_s, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if allowed (and one token spent), else the seconds until the next try is allowed."""
        with self._lock:
            now = self._clock()
            tokens = self._level(key, now)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / self.per_s
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > MAX_KEYS:  # a bucket refilled to the brim is the same as no bucket: forget it
                self._buckets = {k: v for k, v in self._buckets.items() if self._level(k, now) < self.capacity}
            return 0.0

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.per_s)
