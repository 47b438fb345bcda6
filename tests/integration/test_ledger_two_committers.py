"""Two ledgers (two committers, as in two processes) writing to one database, taking turns.

Each committer remembers the head it wrote last and, when nobody else appended since, hashes its next
batch onto that head before taking the lock (the speculative path). Here every turn finds the head
moved by the other committer, so every speculation must be refused by the server and the batch
redone the locked way: these tests pin that fallback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.postgres.ledger_store import PostgresLedger
from domain.ledger import ConcurrencyError, NewEvent
from domain.verify import verify_rows


@pytest.fixture
def other(database, ledger: PostgresLedger) -> Iterator[PostgresLedger]:
    """A second ledger with its own committer thread and connection, on the same database."""
    with PostgresLedger(database.app_url) as opened:
        yield opened


def thing(stream: str, n: int) -> NewEvent:
    return NewEvent(stream, "ThingHappened", {"n": n}, tenant_id="acme")


def test_alternating_committers_keep_positions_contiguous_and_the_chain_valid(
    ledger: PostgresLedger, other: PostgresLedger
):
    positions = []
    for n in range(30):
        writer = ledger if n % 2 == 0 else other
        # Two in a row from the same writer let it speculate; the other's turn then moves the head.
        for stream in (f"a-{n % 4}", f"b-{n % 3}"):
            [receipt] = writer.append([thing(stream, n)])
            positions.append(receipt.position)
    assert positions == list(range(1, 61))
    verified = verify_rows(ledger.genesis(), ledger.iter_entries(), ledger.heads())
    assert verified.size == 60
    assert verified.root == ledger.head().root == other.head().root


def test_a_version_remembered_by_one_committer_is_not_trusted_after_the_other_appended(
    ledger: PostgresLedger, other: PostgresLedger
):
    ledger.append([thing("order-1", 1)], {"order-1": 0})
    ledger.append([thing("order-1", 2)], {"order-1": 1})  # this committer now remembers order-1 at 2
    other.append([thing("order-1", 3)], {"order-1": 2})  # and the stream moved on without it
    with pytest.raises(ConcurrencyError) as refused:
        ledger.append([thing("order-1", 4)], {"order-1": 2})
    assert (refused.value.expected, refused.value.actual) == (2, 3)
    [receipt] = ledger.append([thing("order-1", 4)], {"order-1": 3})
    assert (receipt.position, receipt.stream_version) == (4, 4)


def test_an_event_recorded_through_one_committer_is_a_replay_through_the_other(
    ledger: PostgresLedger, other: PostgresLedger
):
    ledger.append([thing("warmup", 0)])
    ledger.append([thing("warmup", 1)])  # speculating from here on
    event = thing("payment-1", 1)
    first = other.append([event], {"payment-1": 0})
    again = ledger.append([event], {"payment-1": 0})
    assert again == first
    assert ledger.head().size == other.head().size == 3


def test_concurrent_committers_in_threads_never_lose_or_reorder(ledger: PostgresLedger, other: PostgresLedger):
    from concurrent.futures import ThreadPoolExecutor

    def burst(writer: PostgresLedger, prefix: str) -> list[int]:
        return [writer.append([thing(f"{prefix}-{i % 5}", i)])[0].position for i in range(100)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(burst, (ledger, other, ledger, other), ("p", "q", "r", "s")))
    assert sorted(p for r in results for p in r) == list(range(1, 401))
    assert all(r == sorted(r) for r in results)  # each caller's appends land in its own order
    assert verify_rows(ledger.genesis(), ledger.iter_entries(), ledger.heads()).size == 400


def test_a_stream_presumed_new_that_exists_is_a_conflict_and_its_batch_mates_still_commit(
    ledger: PostgresLedger, other: PostgresLedger
):
    # A committer does not read the version of a stream whose first append expects version 0 (each
    # inference has a new stream): here one exists already, written by the other committer.
    other.append([thing("order-9", 1)], {"order-9": 0})
    ledger.append([thing("warmup", 0)])
    ledger.append([thing("warmup", 1)])  # speculating again, without having seen order-9
    stale = ledger.submit([thing("order-9", 2)], {"order-9": 0})
    fresh = ledger.submit([thing("order-10", 1)], {"order-10": 0})
    loose = ledger.submit([thing("order-11", 1)])
    with pytest.raises(ConcurrencyError) as refused:
        stale.result(timeout=10)
    assert (refused.value.expected, refused.value.actual) == (0, 1)
    assert [r.stream_version for r in fresh.result(timeout=10) + loose.result(timeout=10)] == [1, 1]
    [receipt] = ledger.append([thing("order-9", 2)], {"order-9": 1})
    assert (receipt.stream_version, receipt.position) == (2, 6)
    assert [e.payload for e in ledger.read_stream("order-9")] == [b'{"n":1}', b'{"n":2}']
    assert verify_rows(ledger.genesis(), ledger.iter_entries(), ledger.heads()).size == 6
