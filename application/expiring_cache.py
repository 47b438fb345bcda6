"""A bounded LRU whose entries expire: what the hot path keeps in memory (data keys, verified API keys)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringLru(Generic[K, V]):
    """At most `size` entries, each for `ttl_s` seconds after it was put; least recently used go first.
    Thread-safe. A ttl or size of 0 keeps nothing."""

    def __init__(self, ttl_s: float, size: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self.get_with_expiry(key)
        return None if found is None else found[0]

    def get_with_expiry(self, key: K) -> tuple[V, float] | None:
        """`get`, and the clock time at which the entry expires."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[1] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found

    def put(self, key: K, value: V, *, since: float | None = None) -> None:
        """Keep `value` until `ttl_s` after `since` (the clock's time of the read it came from; default now)."""
        if self._ttl <= 0 or self._size <= 0:
            return
        with self._lock:
            self._entries[key] = (value, (self._clock() if since is None else since) + self._ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def pop_where(self, predicate: Callable[[V], bool]) -> None:
        with self._lock:
            for key in [k for k, (v, _) in self._entries.items() if predicate(v)]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
