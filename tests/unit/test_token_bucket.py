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
