"""Rate limits shared by API processes: each keeps its buckets in memory and tells the others what it
spent (application/shared_budget.py), over a real PostgreSQL LISTEN/NOTIFY connection each. A "process"
here is a set of buckets with its exchange running on an event loop of its own, as in an API process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from adapters.postgres.spending_exchange import CHANNEL, PostgresSpendingExchange
from application.shared_budget import SharedBuckets, bucket_id_secret
from application.token_bucket import TokenBucket
from tests.polling import eventually

EVERY_S = 0.05
BURST = 10
TOKEN_HASH = "a3f1" * 16  # what RateLimits keys an API key by
SECRET = bucket_id_secret(b"signing key of this deployment..")  # every API process of it derives the same


@contextmanager
def api_process(url: str, **options: Any) -> Iterator[tuple[TokenBucket, PostgresSpendingExchange]]:
    """A key bucket with nearly no refill, shared through an exchange that runs until the block ends."""
    keys = TokenBucket(capacity=BURST, per_s=1e-6)
    exchange = PostgresSpendingExchange(url, every_s=EVERY_S, **options)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(exchange.run(SharedBuckets({"keys": keys}, SECRET), stop),), daemon=True)
    thread.start()
    try:
        eventually(lambda: exchange.listening, "the exchange began listening")
        yield keys, exchange
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def allowed(keys: TokenBucket, tries: int) -> int:
    return sum(keys.take(TOKEN_HASH) == 0 for _ in range(tries))


def settled() -> None:
    time.sleep(EVERY_S * 6)  # a few exchanges: what each spent has reached the other


def test_a_limit_holds_across_processes_instead_of_once_per_process(database):
    with api_process(database.app_url) as (a, _), api_process(database.app_url) as (b, _):
        assert allowed(a, 6) == 6
        settled()
        assert allowed(b, BURST) == BURST - 6  # private buckets would have allowed all ten here
        settled()
        assert allowed(a, BURST) == 0  # and b's four are gone from a's bucket too


def test_a_process_does_not_count_its_own_spending_twice(database):
    with api_process(database.app_url) as (a, _), api_process(database.app_url):
        assert allowed(a, 3) == 3
        settled()  # its own notifications come back to it as well, and are skipped
        assert allowed(a, BURST) == BURST - 3


def test_spending_at_the_same_moment_is_paid_back_before_more_is_allowed(database):
    """Both processes allow the whole burst before either hears of the other: that is the overshoot a
    shared limit can have (one exchange's worth). Both then owe it, and allow nothing until it is refilled."""
    with api_process(database.app_url) as (a, _), api_process(database.app_url) as (b, _):
        assert allowed(a, BURST) == BURST and allowed(b, BURST) == BURST
        settled()
        assert allowed(a, 1) == 0 and allowed(b, 1) == 0
        assert a.take(TOKEN_HASH) >= BURST / 1e-6  # a whole burst owed: a burst's refill before the next


def test_a_process_proves_that_it_hears_the_others(database):
    with api_process(database.app_url) as (_, a), api_process(database.app_url) as (_, b):
        eventually(lambda: a.hearing and b.hearing, "each heard its probe come back")


def test_a_process_that_hears_nothing_says_why_and_the_others_still_count_what_it_spends(database, caplog):
    """As behind a pooler in transaction mode: LISTEN succeeds, and nothing is ever heard, so this process alone
    would allow the whole limit. Its probe never comes back, and it says so; what it sends still reaches those
    who do hear."""
    with api_process(database.app_url, probe_url=database.elsewhere_url, probe_timeout_s=0.3,
                     undelivered_retry_s=0.2) as (a, deaf), api_process(database.app_url) as (b, _):
        eventually(lambda: "rate limits are not shared: this process hears no other's spending" in caplog.text,
                   "the reason logged")
        assert not deaf.hearing and "Is a pooler in transaction mode" in caplog.text
        assert allowed(a, 4) == 4
        settled()
        assert allowed(b, BURST) == BURST - 4
        deaf.probes.url = database.app_url  # the pooler gone
        eventually(lambda: deaf.hearing, "hearing once a probe comes back")
        assert "rate limits are shared again" in caplog.text


def test_a_process_that_stops_hearing_while_it_listens_notices_it_at_its_next_probe(database, caplog):
    with api_process(database.app_url, probe_every_s=0.2, probe_timeout_s=0.3,
                     undelivered_retry_s=0.2) as (_, exchange):
        eventually(lambda: exchange.hearing, "hearing")
        exchange.probes.url = database.elsewhere_url  # from now on, no probe it sends comes back
        eventually(lambda: not exchange.hearing, "no longer hearing")
        assert "rate limits are not shared" in caplog.text
        exchange.probes.url = database.app_url
        eventually(lambda: exchange.hearing, "hearing again")


def test_after_a_lost_connection_spending_is_exchanged_again(database):
    with api_process(database.app_url, reconnect_after_s=0.05) as (a, exchange), \
            api_process(database.app_url, reconnect_after_s=0.05) as (b, other):
        with psycopg.connect(database.admin_url, autocommit=True) as admin:
            [ended] = admin.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend' AND pid IN"
                " (SELECT pid FROM pg_stat_activity WHERE query LIKE %s)) t", (f"%{CHANNEL}%",)).fetchone()
        assert ended == 2
        eventually(lambda: not exchange.listening, "the lost connection noticed", within_s=3)
        eventually(lambda: exchange.listening and other.listening, "listening again")
        assert allowed(b, 4) == 4
        settled()
        assert allowed(a, BURST) == BURST - 4


def test_what_a_process_spends_while_its_connection_is_down_is_told_once_it_is_back(database):
    with api_process(database.app_url, reconnect_after_s=0.5) as (a, exchange), \
            api_process(database.app_url) as (b, _):
        with psycopg.connect(database.admin_url, autocommit=True) as admin:
            [ended] = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                    " WHERE application_name = %s", (exchange.name,)).fetchone()
        assert ended == 1
        eventually(lambda: not exchange.listening, "the lost connection noticed", within_s=3)
        assert allowed(a, 4) == 4  # nobody can be told now
        eventually(lambda: exchange.listening, "listening again")
        settled()
        assert allowed(b, BURST) == BURST - 4


def test_a_notification_that_is_not_spending_changes_nothing(database):
    with api_process(database.app_url) as (a, _):
        with psycopg.connect(database.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_notify(%s, 'not json')", (CHANNEL,))
            admin.execute("SELECT pg_notify(%s, %s)", (CHANNEL, '{"o": "x", "s": {"keys": {"%s": -100}}}' % ("0" * 32)))
        settled()
        assert allowed(a, BURST) == BURST


@pytest.mark.parametrize("keys_spent", [1_000])
def test_spending_on_many_keys_at_once_reaches_the_other_process_whole(database, keys_spent):
    """More than one NOTIFY payload holds (each under 8000 bytes)."""
    with api_process(database.app_url) as (a, _), api_process(database.app_url) as (b, _):
        for i in range(keys_spent):
            a.take(f"key-{i}")
        settled()
        assert sum(b.take(f"key-{i}") == 0 for i in range(keys_spent) for _ in range(BURST)) == keys_spent * (BURST - 1)
