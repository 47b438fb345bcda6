"""Token buckets (application/token_bucket.py): a burst, then one try per refill interval, per key."""

from __future__ import annotations

import pytest

from application import token_bucket
from application.token_bucket import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_wait_until_the_next_token():
    clock = Clock()
    bucket = TokenBucket(capacity=3, per_s=0.5, clock=clock)
    assert [bucket.take("k") for _ in range(3)] == [0, 0, 0]
    assert bucket.take("k") == pytest.approx(2.0)  # one token every 2 s
    clock.now = 1.0
    assert bucket.take("k") == pytest.approx(1.0)
    clock.now = 2.0
    assert bucket.take("k") == 0
    assert bucket.take("other") == 0  # each key its own bucket


def test_a_bucket_never_holds_more_than_its_capacity():
    clock = Clock()
    bucket = TokenBucket(capacity=2, per_s=1, clock=clock)
    clock.now = 1_000.0
    assert [bucket.take("k") > 0 for _ in range(3)] == [False, False, True]


def test_memory_stays_bounded_by_forgetting_full_buckets(monkeypatch):
    monkeypatch.setattr(token_bucket, "MAX_KEYS", 10)
    clock = Clock()
    bucket = TokenBucket(capacity=2, per_s=1, clock=clock)
    for i in range(10):
        bucket.take(f"old{i}")
    clock.now = 10.0  # the old ones have refilled: the same as never seen
    bucket.take("new")
    assert set(bucket._buckets) == {"new"}


def test_a_bucket_that_could_never_allow_anything_is_refused():
    with pytest.raises(ValueError):
        TokenBucket(capacity=0.5, per_s=1)


def test_a_spray_of_keys_that_have_not_refilled_still_cannot_grow_memory_past_the_bound(monkeypatch):
    """Random keys faster than they refill (every bucket partly spent) must not grow the map without bound."""
    monkeypatch.setattr(token_bucket, "MAX_KEYS", 100)
    clock = Clock()  # frozen: nothing ever refills, so no bucket is 'full' and forgettable
    bucket = TokenBucket(capacity=5, per_s=1 / 12, clock=clock)
    for i in range(5_000):
        bucket.take(f"spray{i}")
        assert len(bucket._buckets) <= 100


def test_the_most_recently_used_key_keeps_its_debt_under_a_spray(monkeypatch):
    monkeypatch.setattr(token_bucket, "MAX_KEYS", 100)
    clock = Clock()
    bucket = TokenBucket(capacity=2, per_s=1 / 12, clock=clock)
    for i in range(1_000):
        bucket.take(f"spray{i}")
    assert [bucket.take("victim") > 0 for _ in range(3)] == [False, False, True]
    for i in range(50):  # fewer new keys than the bound: the victim's spent bucket is still remembered
        bucket.take(f"more{i}")
    assert bucket.take("victim") > 0
