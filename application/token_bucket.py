"""Token buckets in process memory: `capacity` tries at once, refilled at `per_s` a second, per key.

Used for sign-in attempts (application/sessions.py) and request rate limits (api/ratelimit.py). In
memory on purpose: a check costs a dict lookup under a lock, no round trip. A shared bucket also counts
what it spends, so that other processes can be told and debit theirs (application/shared_budget.py):
each process's buckets then follow everyone's spending, a moment late.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

MAX_KEYS = 100_000  # bounded memory under a spray of keys


def opaque_id(key: str, secret: bytes) -> str:
    """What a shared bucket is known by, in memory and to other processes: a keyed hash, so that a key such
    as an email address or a token's hash never leaves the process, and nobody without `secret` can tell
    whose bucket an id is, or make up the id of a bucket they know the key of."""
    return hashlib.blake2b(key.encode(), digest_size=16, key=secret).hexdigest()


class TokenBucket:
    def __init__(self, capacity: float = 5, per_s: float = 1 / 12, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or per_s <= 0:
            raise ValueError(f"a bucket needs capacity >= 1 and a positive refill rate, got {capacity}, {per_s}")
        self.capacity, self.per_s, self._clock = capacity, per_s, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._unshared: dict[str, int] | None = None  # tokens spent here since others were last told; None: private
        self._secret = b""

    def share(self, secret: bytes) -> None:
        """From now on buckets are kept by opaque_id and what this process spends is counted for the others
        (which must share with the same secret)."""
        if not 16 <= len(secret) <= 64:
            raise ValueError(f"a bucket id secret of 16 to 64 bytes, got {len(secret)}")
        with self._lock:
            self._buckets.clear()
            self._unshared = {}
            self._secret = secret

    @property
    def shared(self) -> bool:
        return self._unshared is not None

    def take(self, key: str) -> float:
        """0 if allowed (and one token spent), else the seconds until the next try is allowed."""
        with self._lock:
            unshared = self._unshared
            if unshared is not None:
                key = opaque_id(key, self._secret)
            now = self._clock()
            tokens = self._level(key, now)
            spent = tokens >= 1
            self._buckets[key] = (tokens - 1 if spent else tokens, now)
            self._buckets.move_to_end(key)
            if spent and unshared is not None and (key in unshared or len(unshared) < MAX_KEYS):
                unshared[key] = unshared.get(key, 0) + 1
            if len(self._buckets) > MAX_KEYS:
                self._shrink(now)
            return 0.0 if spent else (1 - tokens) / self.per_s

    def spent_here(self) -> dict[str, int]:
        """Tokens this process spent since the last call, by opaque id (empty unless shared)."""
        with self._lock:
            if self._unshared is None:
                return {}
            spent, self._unshared = self._unshared, {}
            return spent

    def spent_elsewhere(self, spent: Mapping[str, int], age_s: float = 0.0) -> None:
        """Debit what other processes spent. A bucket may owe up to its capacity: tokens that two processes
        took at the same moment are paid back before either allows more.

        Spending told late (`age_s`: it happened at most that long ago, as after a lost connection) is
        debited less `per_s * age_s`, the most the bucket can have refilled since, and owes no more than
        it would still owe had it hit its debt bound then: never more than the spending would have cost
        told at once, and nothing once that much refill covers it.
        """
        if not self.shared:
            return
        refilled = self.per_s * max(age_s, 0.0)
        floor = -self.capacity + refilled  # told at once, the debt stopped at -capacity, and refilled since
        with self._lock:
            now = self._clock()
            for key, tokens in spent.items():
                if tokens <= refilled:
                    continue
                level = self._level(key, now)
                self._buckets[key] = (max(level - (tokens - refilled), min(level, floor)), now)
                self._buckets.move_to_end(key)
            if len(self._buckets) > MAX_KEYS:
                self._shrink(now)

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
