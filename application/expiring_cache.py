"""A bounded LRU whose entries expire: what the hot path keeps in memory (data keys, verified API keys,
routing tables).

A value read from a store is put with the read it came from (`read_started`, `put_read`), so that it
expires a TTL after the read began and is not put at all if the key was invalidated meanwhile: a change
made in this process never loses to a read that began before it. A busy key's entry can be read again
before it expires, off the caller's path (`get_refreshing`), so that its callers never wait for the store.
While every change to what it holds is announced to it (`last_until_invalidated`, set by the change-notice
follower, application/change_notices.py), an entry lasts until invalidated instead, and nothing is read
again in the background.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)

LASTING_MAX_S = 600.0
"""The age at which even a lasting entry is read again: a bound in case a change was never announced."""


class ReadStart(NamedTuple):
    """When a read of the store began, and the cache's generation then."""

    at: float
    generation: int


class ExpiringLru(Generic[K, V]):
    """At most `size` entries, each for `ttl_s` seconds after it was put; least recently used go first.
    Thread-safe. A ttl or size of 0 keeps nothing."""

    def __init__(self, ttl_s: float, size: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        # advanced by every invalidation: one counter, not one per key, so it costs no memory per key;
        # a read that overlaps an invalidation of another key is merely not cached
        self._generation = 0
        self._refreshing: set[K] = set()
        self._lasting = False

    def get(self, key: K) -> V | None:
        found = self._get_with_expiry(key)
        return None if found is None else found[0]

    def get_refreshing(self, key: K, read: Callable[[V], V | None]) -> V | None:
        """`get`; and once the entry is past half its TTL, `read(value)` in a worker thread of the running
        event loop (or at once, with none), once however many callers ask. What it returns replaces the
        entry for a TTL counted from the read's start; None, or an exception, drops it, so that the next
        caller reads on its own path (and meets whatever failed)."""
        found = self._get_with_expiry(key)
        if found is None:
            return None
        value, expires_at = found
        if not self._lasting and expires_at - self._clock() < self._ttl / 2 and self._claim_refresh(key):
            try:
                asyncio.get_running_loop().run_in_executor(None, self._refresh, key, value, read)
            except RuntimeError:  # no event loop here
                self._refresh(key, value, read)
        return value

    def last_until_invalidated(self, lasting: bool) -> None:
        """While `lasting`, entries last until invalidated, evicted or LASTING_MAX_S old, instead of their TTL,
        and `get_refreshing` reads nothing again: for while every change is announced. Off again, the TTL
        counts from each entry's read as before (the caller clears what a lapse in announcements made stale)."""
        with self._lock:
            self._lasting = lasting

    @property
    def refreshing(self) -> int:
        """How many background reads are under way."""
        return len(self._refreshing)

    def read_started(self) -> ReadStart:
        """Call before reading a value from the store, and give the result to `put_read`."""
        with self._lock:
            return ReadStart(self._clock(), self._generation)

    def put_read(self, key: K, value: V, read: ReadStart) -> None:
        """Keep `value` until the TTL after `read` began, unless something was invalidated since (the value
        may be older than that change)."""
        with self._lock:
            if read.generation == self._generation:
                self._put(key, value, read.at)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._put(key, value, self._clock())

    def invalidate(self, key: K) -> None:
        """Drop the entry, and keep any read begun before now from putting it back."""
        with self._lock:
            self._generation += 1
            self._entries.pop(key, None)

    def invalidate_where(self, predicate: Callable[[V], bool]) -> None:
        """`invalidate` for every entry whose value matches."""
        with self._lock:
            self._generation += 1
            for key in [k for k, (v, _) in self._entries.items() if predicate(v)]:
                del self._entries[key]

    def clear(self) -> None:
        """Drop every entry, and keep any read begun before now from putting one back."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def pop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _get_with_expiry(self, key: K) -> tuple[V, float] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            expires_at = found[1] + (max(0.0, LASTING_MAX_S - self._ttl) if self._lasting else 0.0)
            if expires_at <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found

    def _put(self, key: K, value: V, since: float) -> None:
        if self._ttl <= 0 or self._size <= 0:
            return
        self._entries[key] = (value, since + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def _claim_refresh(self, key: K) -> bool:
        with self._lock:
            if key in self._refreshing:
                return False
            self._refreshing.add(key)
            return True

    def _refresh(self, key: K, value: V, read: Callable[[V], V | None]) -> None:
        try:
            started = self.read_started()
            fresh = read(value)
            if fresh is None:
                self.invalidate(key)
            else:
                self.put_read(key, fresh, started)
        except Exception as exc:
            log.warning("reading %r again in the background failed: %s", key, exc)
            self.pop(key)
        finally:
            with self._lock:
                self._refreshing.discard(key)
