"""Positions stay contiguous, gap-free and in commit order under many writers in several processes."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid

import psycopg

from adapters.postgres.ledger_store import PostgresLedger
from domain.ledger import ConcurrencyError, NewEvent
from domain.verify import verify_rows

PROCESSES = 2
THREADS_PER_PROCESS = 32  # 64 appenders in all
APPENDS_PER_THREAD = 25
CONTENDED_STREAMS = ["hot-1", "hot-2", "hot-3"]


def _appender_process(url: str, process_no: int, results: multiprocessing.Queue) -> None:
    """One OS process with its own ledger (own batcher) and 32 appender threads."""
    outcomes: list[tuple] = []
    lock = threading.Lock()
    with PostgresLedger(url) as ledger:

        def appender(thread_no: int) -> None:
            rng = random.Random(process_no * 1000 + thread_no)
            for i in range(APPENDS_PER_THREAD):
                if rng.random() < 0.3:
                    # Read-then-write on a shared stream: some of these race and must be refused.
                    stream = rng.choice(CONTENDED_STREAMS)
                    current = len(ledger.read_stream(stream))
                    events = [NewEvent(stream, "Contended", {"p": process_no, "t": thread_no, "i": i})]
                    try:
                        receipts = ledger.append(events, {stream: current})
                        outcome = ("ok", stream, current, [(r.position, r.stream_version) for r in receipts])
                    except ConcurrencyError as exc:
                        outcome = ("conflict", stream, current, (exc.expected, exc.actual))
                else:
                    stream = f"own-{process_no}-{thread_no}"
                    count = rng.randint(1, 3)
                    events = [NewEvent(stream, "Owned", {"i": i, "k": k}) for k in range(count)]
                    receipts = ledger.append(events)
                    outcome = ("ok", stream, None, [(r.position, r.stream_version) for r in receipts])
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=appender, args=(t,)) for t in range(THREADS_PER_PROCESS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    results.put(outcomes)


def _tail(ledger: PostgresLedger, stop: threading.Event, seen: list[int], skips: list[tuple[int, int]]) -> None:
    """A reader that follows the ledger by position, as a relay or projection would."""
    next_position = 1
    while not stop.is_set() or ledger.head().size >= next_position:
        batch = ledger.read(next_position, limit=500)
        for entry in batch:
            if entry.position != next_position:
                skips.append((next_position, entry.position))
            seen.append(entry.position)
            next_position = entry.position + 1
        if not batch:
            time.sleep(0.001)


def test_64_appenders_in_two_processes_leave_no_gap_and_every_conflict_is_reported(ledger, database):
    stop = threading.Event()
    seen: list[int] = []
    skips: list[tuple[int, int]] = []
    reader = threading.Thread(target=_tail, args=(ledger, stop, seen, skips))
    reader.start()

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    processes = [ctx.Process(target=_appender_process, args=(database.app_url, p, results)) for p in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = [o for _ in processes for o in results.get(timeout=300)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    stop.set()
    reader.join(timeout=60)

    head = ledger.head()
    assert skips == [], "the tailing reader skipped positions that appeared later"
    assert seen == list(range(1, head.size + 1))

    written = sorted(p for o in outcomes if o[0] == "ok" for p, _ in o[3])
    assert written == list(range(1, head.size + 1)), "positions must be contiguous from 1 with no duplicates"

    with psycopg.connect(database.app_url) as conn:
        (count,) = conn.execute("SELECT count(*) FROM ledger.events").fetchone()
    assert count == head.size

    conflicts = [o for o in outcomes if o[0] == "conflict"]
    assert conflicts, "the contended streams should have produced at least one refused append"
    for _, _stream, expected, (reported_expected, reported_actual) in conflicts:
        assert reported_expected == expected
        assert reported_actual > expected  # refused because someone else got there first

    for stream in CONTENDED_STREAMS:  # every accepted contended append got exactly the version it expected
        accepted = sorted((o[2], o[3][0][1]) for o in outcomes if o[0] == "ok" and o[1] == stream)
        assert [version for _, version in accepted] == [expected + 1 for expected, _ in accepted]
        assert [version for _, version in accepted] == list(range(1, len(accepted) + 1))

    verified = verify_rows(ledger.genesis(), ledger.iter_entries(), ledger.heads())
    assert (verified.size, verified.root) == (head.size, head.root)


def test_a_writer_holding_its_transaction_open_holds_back_every_later_position(ledger, database):
    """Marten #4953: a reader must never see position N+1 while N's transaction is still open."""
    ledger.append([NewEvent("before", "Thing", {})])
    blocker = psycopg.connect(database.app_url)
    blocker.execute("SELECT 1 FROM ledger.append_lock FOR UPDATE")  # what an append transaction holds

    done: list[list] = []
    writers = [
        threading.Thread(target=lambda i=i: done.append(ledger.append([NewEvent(f"later-{i}", "Thing", {})])))
        for i in range(8)
    ]
    for writer in writers:
        writer.start()
    time.sleep(0.5)
    assert [e.position for e in ledger.read(1)] == [1], "nothing may commit while an earlier writer is open"
    assert done == []

    blocker.commit()  # the earlier writer finishes; the queued appends follow it in order
    blocker.close()
    for writer in writers:
        writer.join(timeout=30)
    assert [e.position for e in ledger.read(1)] == list(range(1, 10))
    assert sorted(r[0].position for r in done) == list(range(2, 10))


def test_retries_after_an_unknown_outcome_are_safe(ledger):
    """A caller that did not get its receipt resends the same event ids and gets the same positions."""
    events = [NewEvent("order-1", "OrderPlaced", {"n": 1}, event_id=uuid.uuid4())]
    first = ledger.append(events, {"order-1": 0})
    retried = ledger.append(events, {"order-1": 0})
    assert retried == first
