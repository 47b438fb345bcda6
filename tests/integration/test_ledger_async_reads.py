"""Stream reads on the event loop (adapters/postgres/async_reads.py): the same entries as the blocking
read, on any loop, with a bounded number of connections per loop."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from adapters.postgres.async_reads import CONNECTIONS_PER_LOOP
from adapters.postgres.ledger_store import PostgresLedger
from domain.ledger import NewEvent


def thing(stream: str, n: int) -> NewEvent:
    return NewEvent(stream, "ThingHappened", {"n": n}, tenant_id="acme")


def test_an_async_stream_read_returns_what_the_blocking_read_returns(ledger: PostgresLedger):
    ledger.append([thing("order-1", n) for n in range(3)] + [thing("order-2", 9)])
    assert asyncio.run(ledger.read_stream_async("order-1")) == ledger.read_stream("order-1")
    assert asyncio.run(ledger.read_stream_async("order-1", from_version=3)) == ledger.read_stream("order-1", 3)
    assert asyncio.run(ledger.read_stream_async("nothing-here")) == []


def test_each_loop_reads_on_its_own_connections_and_a_burst_waits_for_a_bounded_few(
    ledger: PostgresLedger, database
):
    ledger.append([thing("order-1", 1)])

    async def burst() -> set[int]:
        rows = await asyncio.gather(*(ledger.read_stream_async("order-1") for _ in range(60)))
        assert all(len(r) == 1 for r in rows)
        return {c.info.backend_pid for c in ledger._async_reads._here().idle}

    first = asyncio.run(burst())
    second = asyncio.run(burst())  # a new loop: the last one's connections are not reused, and are closed
    assert 1 <= len(first) <= CONNECTIONS_PER_LOOP and 1 <= len(second) <= CONNECTIONS_PER_LOOP
    assert not first & second
    deadline = time.monotonic() + 5  # a backend ends a moment after its client hangs up
    with psycopg.connect(database.admin_url, autocommit=True) as admin:
        while True:
            [[open_ones]] = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                                          (list(first | second),)).fetchall()
            if open_ones == len(second) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert open_ones == len(second)


def test_a_closed_ledger_refuses_async_reads(database):
    ledger = PostgresLedger(database.app_url)
    ledger.close()
    with pytest.raises(psycopg.OperationalError):
        asyncio.run(ledger.read_stream_async("order-1"))
