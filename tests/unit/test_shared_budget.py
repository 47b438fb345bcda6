"""Shared budgets (application/shared_budget.py) and their NOTIFY encoding (adapters/postgres/spending_exchange.py)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.postgres.spending_exchange import MAX_PAYLOAD_BYTES, UnsentSpending, parse_spending, spending_payloads
from application.shared_budget import SharedBuckets, bucket_id_secret
from application.token_bucket import TokenBucket, opaque_id
from tests.clock import Clock

SECRET = bucket_id_secret(b"k" * 32)


def test_named_buckets_report_only_what_was_spent_and_take_only_their_own_debits():
    keys, users = TokenBucket(capacity=5, per_s=1), TokenBucket(capacity=5, per_s=1)
    shared = SharedBuckets({"keys": keys, "users": users, "sign_in": None}, SECRET)
    keys.take("token-hash")
    assert shared.spent_here() == {"keys": {opaque_id("token-hash", SECRET): 1}}
    shared.spent_elsewhere({"users": {opaque_id("u1", SECRET): 5}, "unknown_budget": {opaque_id("x", SECRET): 1}})
    assert users.take("u1") > 0
    assert keys.take("u1") == 0  # another budget's debit is not this one's


def test_the_ids_secret_differs_with_the_signing_key_and_is_never_the_key_itself():
    assert bucket_id_secret(b"k" * 32) != bucket_id_secret(b"j" * 32)
    assert b"k" * 32 not in bucket_id_secret(b"k" * 32)


def test_nothing_to_share_when_every_limit_is_off():
    assert not SharedBuckets({"keys": None, "users": None}, SECRET)


ids = st.text("0123456789abcdef", min_size=32, max_size=32)


@given(st.dictionaries(st.sampled_from(["keys", "users", "sign_in"]),
                       st.dictionaries(ids, st.integers(1, 1_000_000), min_size=1, max_size=600), max_size=3))
def test_any_spending_goes_out_in_payloads_postgres_accepts_and_comes_back_whole(spent):
    payloads = list(spending_payloads("a" * 32, spent))
    assert all(len(p.encode()) < MAX_PAYLOAD_BYTES for p in payloads)
    back: dict[str, dict[str, int]] = {}
    for payload in payloads:
        origin, part, age_s = parse_spending(payload)
        assert (origin, age_s) == ("a" * 32, 0.0)
        for name, amounts in part.items():
            assert not set(amounts) & set(back.get(name, {}))  # each amount told once
            back.setdefault(name, {}).update(amounts)
    assert back == {name: amounts for name, amounts in spent.items() if amounts}


@pytest.mark.parametrize("payload", [
    "not json",
    "[]",
    orjson.dumps({"o": "p", "s": {"keys": {"not-an-id": 1}}}).decode(),
    orjson.dumps({"o": "p", "s": {"keys": {"a" * 32: -5}}}).decode(),  # a negative amount would refill a bucket
    orjson.dumps({"o": "p", "s": {"keys": {"a" * 32: 1.5}}}).decode(),
    orjson.dumps({"o": "p", "s": {"Keys; DROP": {"a" * 32: 1}}}).decode(),
    orjson.dumps({"o": 1, "s": {}}).decode(),
    orjson.dumps({"o": "p", "a": -1, "s": {}}).decode(),  # a negative age would make spending cost more
    orjson.dumps({"o": "p", "a": 1.5, "s": {}}).decode(),
])
def test_a_payload_that_is_not_spending_is_refused(payload):
    with pytest.raises(ValueError, match="not a spending notice"):
        parse_spending(payload)


def test_late_spending_carries_its_age_in_milliseconds():
    [payload] = spending_payloads("p", {"keys": {"a" * 32: 3}}, age_s=2.5)
    assert parse_spending(payload) == ("p", {"keys": {"a" * 32: 3}}, 2.5)


def test_unsent_spending_is_kept_by_the_second_from_its_earliest_start_and_forgotten_after_a_while():
    clock = Clock(100.0)
    unsent = UnsentSpending(remember_s=10, clock=clock)
    unsent.keep({"keys": {"a" * 32: 2}}, since=99.9)
    clock.now = 100.5
    unsent.keep({"keys": {"a" * 32: 3, "b" * 32: 1}}, since=100.0)  # within the same second: one slot
    clock.now = 102.0
    unsent.keep({"users": {"c" * 32: 1}}, since=100.5)
    assert unsent.take() == [(99.9, {"keys": {"a" * 32: 5, "b" * 32: 1}}), (100.5, {"users": {"c" * 32: 1}})]
    assert not unsent

    unsent.keep({"keys": {"a" * 32: 1}}, since=101.0)
    clock.now = 112.0
    unsent.keep({"keys": {"a" * 32: 1}}, since=111.9)
    assert unsent.take() == [(111.9, {"keys": {"a" * 32: 1}})]  # what was spent 11 s ago is refilled by now
