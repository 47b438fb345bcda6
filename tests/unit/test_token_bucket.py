"""Token buckets (application/token_bucket.py): a burst, then one try per refill interval, per key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from application import token_bucket
from application.token_bucket import TokenBucket
from tests.clock import Clock

SECRET = b"s" * 32  # what every API process of one deployment derives from its signing key


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


def test_a_shared_bucket_counts_what_it_spends_under_opaque_ids_for_the_other_processes():
    bucket = TokenBucket(capacity=3, per_s=1, clock=Clock())
    bucket.share(SECRET)
    for _ in range(4):  # three allowed, the fourth refused: only what was allowed is spent
        bucket.take("alice@example.com|10.0.0.1")
    spent = bucket.spent_here()
    assert spent == {token_bucket.opaque_id("alice@example.com|10.0.0.1", SECRET): 3}
    assert "alice" not in repr(spent)  # the key itself never leaves the process
    assert bucket.spent_here() == {}  # told once


def test_what_other_processes_spent_is_debited_from_the_same_bucket():
    clock = Clock()
    bucket = TokenBucket(capacity=5, per_s=1, clock=clock)
    bucket.share(SECRET)
    bucket.take("k")
    bucket.spent_elsewhere({token_bucket.opaque_id("k", SECRET): 3})
    assert [bucket.take("k") == 0 for _ in range(2)] == [True, False]  # 5 - 1 here - 3 elsewhere = 1 left
    assert bucket.spent_here() == {token_bucket.opaque_id("k", SECRET): 2}  # only its own spending is passed on


def test_a_key_first_seen_elsewhere_starts_from_what_was_spent_there():
    bucket = TokenBucket(capacity=4, per_s=1, clock=Clock())
    bucket.share(SECRET)
    bucket.spent_elsewhere({token_bucket.opaque_id("new", SECRET): 4})
    assert bucket.take("new") == pytest.approx(1.0)


def test_a_bucket_owes_at_most_its_capacity_however_much_was_spent_at_once():
    clock = Clock()
    bucket = TokenBucket(capacity=2, per_s=1, clock=clock)
    bucket.share(SECRET)
    bucket.spent_elsewhere({token_bucket.opaque_id("k", SECRET): 1_000})
    assert bucket.take("k") == pytest.approx(3.0)  # from -2 to 1 token: 3 s, not 1,000
    clock.now = 3.0
    assert bucket.take("k") == 0


def test_a_private_bucket_neither_counts_nor_takes_debits():
    bucket = TokenBucket(capacity=2, per_s=1, clock=Clock())
    bucket.take("k")
    bucket.spent_elsewhere({token_bucket.opaque_id("k", SECRET): 2})
    assert bucket.spent_here() == {}
    assert bucket.take("k") == 0


def test_ids_are_keyed_so_that_nobody_without_the_secret_can_tell_or_forge_whose_bucket_it_is():
    """Whoever can NOTIFY could otherwise debit a known user's or email's bucket, or read who is busy."""
    assert token_bucket.opaque_id("u1", SECRET) != token_bucket.opaque_id("u1", b"t" * 32)
    bucket = TokenBucket(capacity=2, per_s=1, clock=Clock())
    bucket.share(SECRET)
    bucket.spent_elsewhere({token_bucket.opaque_id("u1", b"guessed-without-it" * 2): 2})
    assert bucket.take("u1") == 0


def test_sharing_needs_a_real_secret():
    with pytest.raises(ValueError, match="16 to 64 bytes"):
        TokenBucket().share(b"")


def test_spending_told_late_is_debited_less_what_the_bucket_can_have_refilled_since():
    bucket = TokenBucket(capacity=10, per_s=2, clock=Clock())
    bucket.share(SECRET)
    key = token_bucket.opaque_id("k", SECRET)
    bucket.spent_elsewhere({key: 10}, age_s=3.0)  # 10 spent at most 3 s ago: at most 6 refilled since
    assert [bucket.take("k") == 0 for _ in range(7)] == [True] * 6 + [False]
    bucket.spent_elsewhere({key: 5}, age_s=60.0)  # long refilled: costs nothing now
    assert bucket.take("k") == pytest.approx(0.5)


@settings(max_examples=1000)
@given(capacity=st.integers(1, 50), per_s=st.floats(0.1, 20), taken=st.integers(0, 60), spent=st.integers(1, 100),
       age_s=st.floats(0, 30))
def test_late_spending_never_costs_more_than_it_would_have_on_time(capacity, per_s, taken, spent, age_s):
    """What the exchange relies on: whatever the bucket's level (its debt bound included), however late."""
    on_time, late = Clock(), Clock()
    told_at_once, told_late = TokenBucket(capacity, per_s, on_time), TokenBucket(capacity, per_s, late)
    for bucket in (told_at_once, told_late):
        bucket.share(SECRET)
        for _ in range(taken):
            bucket.take("k")
    told_at_once.spent_elsewhere({token_bucket.opaque_id("k", SECRET): spent})
    on_time.now = late.now = age_s
    told_late.spent_elsewhere({token_bucket.opaque_id("k", SECRET): spent}, age_s=age_s)
    assert told_late.take("k") <= told_at_once.take("k") + 1e-9  # the late one waits no longer
