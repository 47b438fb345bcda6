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


class CountedQueries:
    """Counts the queries the ledger's async reads send."""

    def __init__(self, ledger: PostgresLedger) -> None:
        self.sent = 0
        reads = ledger._async_reads
        original = reads._query_rows

        async def counted(*args):
            self.sent += 1
            return await original(*args)

        reads._query_rows = counted  # type: ignore[method-assign]


def test_streams_read_in_the_same_turn_of_the_loop_share_one_query_and_each_gets_its_own_entries(
    ledger: PostgresLedger,
):
    ledger.append([thing("order-1", n) for n in range(3)] + [thing("order-2", 9)] + [thing("order-3", 7)])
    queries = CountedQueries(ledger)

    async def together():
        return await asyncio.gather(ledger.read_stream_async("order-1"), ledger.read_stream_async("order-2"),
                                    ledger.read_stream_async("order-1", from_version=3),
                                    ledger.read_stream_async("order-9"))

    whole, other, tail, missing = asyncio.run(together())
    assert queries.sent == 1
    assert whole == ledger.read_stream("order-1") and other == ledger.read_stream("order-2")
    assert tail == ledger.read_stream("order-1", 3) and missing == []


def test_reads_in_later_turns_send_their_own_queries(ledger: PostgresLedger):
    ledger.append([thing("order-1", 1)])
    queries = CountedQueries(ledger)

    async def one_after_the_other():
        return [await ledger.read_stream_async("order-1") for _ in range(3)]

    assert all(len(r) == 1 for r in asyncio.run(one_after_the_other()))
    assert queries.sent == 3


def test_a_stream_name_with_quotes_and_braces_is_a_name_not_syntax(ledger: PostgresLedger):
    ledger.append([thing("order-1", 1)])

    async def odd_names():
        return await asyncio.gather(ledger.read_stream_async('a"b\\c,{order-1}'),
                                    ledger.read_stream_async("order-1,order-2"), ledger.read_stream_async("order-1"))

    odd, listed, real = asyncio.run(odd_names())
    assert odd == [] and listed == [] and len(real) == 1


def test_a_reader_that_stops_waiting_does_not_spoil_the_query_it_shared(ledger: PostgresLedger):
    ledger.append([thing("order-1", 1), thing("order-2", 2)])

    async def one_gives_up():
        impatient = asyncio.ensure_future(ledger.read_stream_async("order-1"))
        patient = asyncio.ensure_future(ledger.read_stream_async("order-2"))
        await asyncio.sleep(0)
        impatient.cancel()
        return await patient, await ledger.read_stream_async("order-1")

    shared, later = asyncio.run(one_gives_up())
    assert [e.stream_id for e in shared] == ["order-2"] and [e.stream_id for e in later] == ["order-1"]
