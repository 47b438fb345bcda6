"""Token buckets in process memory: `capacity` tries at once, refilled at `per_s` a second, per key.

Used for sign-in attempts (application/sessions.py) and request rate limits (api/ratelimit.py). In
memory on purpose: a check costs a dict lookup under a lock, no round trip; the price is that each
process keeps its own buckets (docs/auth.md says what that means for limits).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 100_000  # bounded memory under a spray of keys


class TokenBucket:
    def __init__(self, capacity: float = 5, per_s: float = 1 / 12, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or per_s <= 0:
            raise ValueError(f"a bucket needs capacity >= 1 and a positive refill rate, got {capacity}, {per_s}")
        self.capacity, self.per_s, self._clock = capacity, per_s, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if allowed (and one token spent), else the seconds until the next try is allowed."""
        with self._lock:
            now = self._clock()
            tokens = self._level(key, now)
            spent = tokens >= 1
            self._buckets[key] = (tokens - 1 if spent else tokens, now)
            self._buckets.move_to_end(key)
            if len(self._buckets) > MAX_KEYS:
                self._shrink(now)
            return 0.0 if spent else (1 - tokens) / self.per_s

    def _shrink(self, now: float) -> None:
        """Back to 90% of MAX_KEYS, so the O(n) pass runs once per tenth of the bound (amortized O(1)).

        First forget buckets refilled to the brim (the same as no bucket); if a spray of keys faster
        than they refill left none, forget the least recently used ones: memory stays bounded, and the
        price (a forgotten bucket's debt) falls on the keys idle longest, not on the ones in use.
        """
        target = MAX_KEYS * 9 // 10
        self._buckets = OrderedDict((k, v) for k, v in self._buckets.items() if self._level(k, now) < self.capacity)
        while len(self._buckets) > target:
            self._buckets.popitem(last=False)

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.per_s)
