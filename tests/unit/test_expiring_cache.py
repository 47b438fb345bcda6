"""The hot path's expiring LRU: bounded, expiring, and read again before it expires without a caller waiting."""

from __future__ import annotations

import asyncio
import threading

from application.expiring_cache import ExpiringLru


def cache(now: list[float], ttl_s: float = 10, size: int = 100) -> ExpiringLru[str, str]:
    return ExpiringLru(ttl_s, size, lambda: now[0])


def test_an_entry_expires_its_ttl_after_it_was_put_and_the_least_recently_used_goes_first():
    now = [0.0]
    lru = cache(now, size=2)
    lru.put("a", "1")
    lru.put("b", "2")
    assert lru.get("a") == "1"  # b is now the least recently used
    lru.put("c", "3")
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == ("1", None, "3")
    now[0] = 10
    assert lru.get("a") is None and len(lru) == 1


def test_a_value_read_before_an_invalidation_is_not_put_back():
    now = [0.0]
    lru = cache(now)
    read = lru.read_started()
    lru.invalidate("a")  # e.g. an erasure, while the read was on its way
    lru.put_read("a", "stale", read)
    assert lru.get("a") is None
    lru.put_read("a", "fresh", lru.read_started())
    assert lru.get("a") == "fresh"


def test_a_value_expires_its_ttl_after_its_read_began_not_after_it_was_put():
    now = [0.0]
    lru = cache(now)
    read = lru.read_started()
    now[0] = 4  # a slow read
    lru.put_read("a", "1", read)
    now[0] = 9.9
    assert lru.get("a") == "1"
    now[0] = 10
    assert lru.get("a") is None


def test_a_young_entry_is_not_read_again_and_an_aging_one_is_read_once_in_the_background():
    now = [0.0]
    lru = cache(now)
    lru.put("a", "1")
    reads: list[str] = []
    gate = threading.Event()

    def read(value: str) -> str:
        reads.append(value)
        gate.wait(5)
        return "2"

    async def requests() -> list[str | None]:
        seen = [lru.get_refreshing("a", read)]  # young
        now[0] = 6
        seen += [lru.get_refreshing("a", read) for _ in range(50)]  # aging: one read, none of them waits
        gate.set()
        while lru.refreshing:
            await asyncio.sleep(0.001)
        return seen + [lru.get_refreshing("a", read)]

    seen = asyncio.run(requests())
    assert seen == ["1"] * 51 + ["2"] and reads == ["1"]
    now[0] = 15.9  # the fresh value counts its TTL from the background read's start, at 6
    assert lru.get("a") == "2"


def test_a_background_read_that_finds_nothing_or_fails_drops_the_entry():
    now = [5.0]
    lru = cache(now)
    lru.put("gone", "1")
    lru.put("broken", "1")
    now[0] = 11

    def fails(value: str) -> str:
        raise ConnectionError("store unreachable")

    assert lru.get_refreshing("gone", lambda value: None) == "1"  # outside a loop: read at once
    assert lru.get_refreshing("broken", fails) == "1"
    assert lru.get("gone") is None and lru.get("broken") is None and lru.refreshing == 0


def test_a_zero_ttl_or_size_keeps_nothing():
    now = [0.0]
    for lru in (cache(now, ttl_s=0), cache(now, size=0)):
        lru.put("a", "1")
        lru.put_read("b", "2", lru.read_started())
        assert lru.get("a") is None and lru.get("b") is None


def test_invalidating_by_value_or_everything_also_keeps_reads_begun_before_from_putting_values_back():
    now = [0.0]
    lru = cache(now)
    lru.put("token-1", "key-a")
    lru.put("token-2", "key-a")
    lru.put("token-3", "key-b")
    read = lru.read_started()
    lru.invalidate_where(lambda value: value == "key-a")  # every token of a revoked key
    assert (lru.get("token-1"), lru.get("token-2"), lru.get("token-3")) == (None, None, "key-b")
    lru.put_read("token-1", "key-a", read)
    assert lru.get("token-1") is None
    read = lru.read_started()
    lru.clear()  # notices were missed: nothing cached can be trusted
    lru.put_read("token-3", "key-b", read)
    assert len(lru) == 0


def test_while_every_change_is_announced_an_entry_lasts_until_invalidated_and_is_not_read_again():
    from application.expiring_cache import LASTING_MAX_S

    now = [0.0]
    lru = cache(now, ttl_s=10)
    reads: list[str] = []
    lru.last_until_invalidated(True)
    lru.put("a", "1")
    now[0] = 9.0  # past half its TTL
    assert lru.get_refreshing("a", lambda value: reads.append(value) or value) == "1"
    now[0] = 500.0  # long past its TTL
    assert lru.get("a") == "1" and reads == [] and lru.refreshing == 0
    lru.invalidate("a")  # the announcement
    assert lru.get("a") is None
    lru.put("b", "2")
    now[0] += LASTING_MAX_S  # the bound in case a change was never announced
    assert lru.get("b") is None


def test_when_announcements_stop_entries_expire_after_their_ttl_again():
    now = [0.0]
    lru = cache(now, ttl_s=10)
    lru.last_until_invalidated(True)
    lru.put("a", "1")
    now[0] = 30.0
    assert lru.get("a") == "1"
    lru.last_until_invalidated(False)
    assert lru.get("a") is None  # 30 s after its read: expired
    lru.put("b", "2")
    now[0] = 39.0
    assert lru.get("b") == "2"
    now[0] = 40.0
    assert lru.get("b") is None
