"""Appending from asyncio tasks (PostgresLedger.append_async): queue order, cancelled callers, mixed callers.

The gateway appends from its event loop while workers append from threads; both share one committer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import psycopg
import pytest

from adapters.postgres.ledger_store import PostgresLedger
from domain.ledger import ConcurrencyError, EventIdConflict, NewEvent
from domain.verify import verify_rows


def thing(stream: str, n: int = 0, event_id: uuid.UUID | None = None) -> NewEvent:
    return NewEvent(stream, "ThingHappened", {"n": n}, tenant_id="acme", event_id=event_id or uuid.uuid4())


def verified_size(ledger: PostgresLedger) -> int:
    return verify_rows(ledger.genesis(), ledger.iter_entries(), ledger.heads()).size

def test_an_outcome_appended_right_behind_its_pending_request_always_follows_it(ledger: PostgresLedger):
    """The gateway's pattern: InferenceRequested appended by a task of its own, then at once its outcome at
    expected version 1: queue order must hold."""

    async def request_then_outcome(n: int) -> None:
        stream = f"inference-{n}"
        requested = asyncio.ensure_future(ledger.append_async([thing(stream, 1)], {stream: 0}))
        await asyncio.sleep(0)  # the requested append is on its way
        [outcome] = await ledger.append_async([thing(stream, 2)], {stream: 1})
        [first] = await requested
        assert (first.stream_version, outcome.stream_version) == (1, 2)
        assert outcome.position > first.position

    async def many():
        await asyncio.gather(*(request_then_outcome(n) for n in range(60)))

    asyncio.run(many())
    assert verified_size(ledger) == 120


def test_asynchronously_a_stale_version_is_refused_and_a_resent_event_gets_its_original_receipt(
    ledger: PostgresLedger,
):
    event = thing("order-1", 1)

    async def scenario():
        first = await ledger.append_async([event], {"order-1": 0})
        again = await ledger.append_async([event], {"order-1": 0})  # a retry
        with pytest.raises(ConcurrencyError) as stale:
            await ledger.append_async([thing("order-1", 2)], {"order-1": 0})
        forged = NewEvent("order-1", "ThingHappened", {"n": 99}, tenant_id="acme", event_id=event.event_id)
        with pytest.raises(EventIdConflict):
            await ledger.append_async([forged])
        after = await ledger.append_async([thing("order-1", 3)], {"order-1": 1})
        return first, again, stale.value, after

    first, again, stale, after = asyncio.run(scenario())
    assert again == first
    assert (stale.expected, stale.actual) == (0, 1)
    assert (after[0].position, after[0].stream_version) == (2, 2)
    assert verified_size(ledger) == 2


def test_an_append_whose_caller_was_cancelled_is_still_recorded_and_the_ledger_goes_on(ledger: PostgresLedger):
    ledger.append([thing("warm-up")])
    event = thing("cancelled", 1)

    async def cancel_mid_commit():
        task = asyncio.ensure_future(ledger.append_async([event], {"cancelled": 0}))
        await asyncio.sleep(0)  # the commit is on its way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the commit went on without its caller, and the ledger goes on
        return await asyncio.wait_for(ledger.append_async([thing("after")]), timeout=10)

    [after] = asyncio.run(cancel_mid_commit())
    [recorded] = ledger.find([event.event_id])
    assert recorded.position == 2 and after.position == 3
    assert verified_size(ledger) == 3


def test_threads_and_event_loops_appending_together_leave_one_gapless_valid_chain(ledger: PostgresLedger):
    def thread_appends(t: int) -> None:
        for n in range(40):
            ledger.append([thing(f"thread-{t}", n)])

    async def loop_appends(loop_no: int) -> None:
        for n in range(40):
            await ledger.append_async([thing(f"loop-{loop_no}", n)])

    threads = [threading.Thread(target=thread_appends, args=(t,)) for t in range(3)]
    threads += [threading.Thread(target=asyncio.run, args=(loop_appends(n),)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verified_size(ledger) == 240
    for name in [f"thread-{t}" for t in range(3)] + [f"loop-{n}" for n in range(3)]:
        assert [e.stream_version for e in ledger.read_stream(name)] == list(range(1, 41))


# --- appends committed on the caller's event loop ----------------------------------------------------
# An event loop's appends are committed on that loop, with a connection of its own, rather than handed
# to the committer thread and woken back from it.


def test_appends_made_at_once_on_one_event_loop_share_transactions(ledger: PostgresLedger):
    async def at_once():
        return await asyncio.gather(*(ledger.append_async([thing(f"s-{i}")], {f"s-{i}": 0}) for i in range(60)))

    receipts = asyncio.run(at_once())
    assert sorted(r.position for [r] in receipts) == list(range(1, 61))
    assert len(ledger.heads()) < 60  # one tree head per transaction
    assert verified_size(ledger) == 60


def test_event_loops_that_follow_one_another_each_append_onto_the_same_chain(ledger: PostgresLedger):
    async def appends(loop_no: int) -> None:
        for n in range(10):
            await ledger.append_async([thing(f"loop-{loop_no}", n)], {f"loop-{loop_no}": n})

    for loop_no in range(3):
        asyncio.run(appends(loop_no))
        ledger.append([thing("from-a-thread", loop_no)])  # and the committer thread in between
    assert verified_size(ledger) == 33
    assert [e.stream_version for e in ledger.read_stream("loop-2")] == list(range(1, 11))


def test_appends_cut_off_by_their_event_loop_stopping_are_whole_or_absent_and_the_next_loop_appends(
    ledger: PostgresLedger,
):
    events = [thing(f"cut-{n}") for n in range(20)]

    async def leave_mid_commit():
        for event in events:
            asyncio.ensure_future(ledger.append_async([event]))
        await asyncio.sleep(0)  # the first commit is on its way; asyncio.run then cancels what is left

    asyncio.run(leave_mid_commit())
    [after] = asyncio.run(ledger.append_async([thing("after")]))
    recorded = ledger.find([e.event_id for e in events])
    assert after.position == len(recorded) + 1
    assert verified_size(ledger) == len(recorded) + 1


def test_closing_the_ledger_closes_the_event_loops_connection_too(database):
    ledger = PostgresLedger(database.app_url)
    asyncio.run(ledger.append_async([thing("one")]))
    ledger.close()
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        for _ in range(100):
            [[left]] = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            if left == 0:
                break
            time.sleep(0.05)
    assert left == 0
