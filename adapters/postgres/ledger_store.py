"""The ledger in PostgreSQL: group commit, one serialising lock, hash chain and Merkle tree in SQL rows.

An append travels like this (ops/bench/README.md has the measurements behind each choice):

1. The caller's thread validates and encodes its events: canonical payload bytes, and the parts of
   the canonical entry and of the binary COPY row that do not depend on position or time. That is
   most of the per-event Python work, done while the committer waits on PostgreSQL.
2. The request joins a queue. One committer thread per process takes everything queued (up to
   `max_batch` events) into one transaction. In the steady state (no other process appended since
   its last commit) it hashes the batch onto the head it wrote last, then sends BEGIN, the lock, a
   check that the head is still that one, the Merkle nodes, the new tree head, the entries and
   COMMIT as one query string: one round trip for a small batch, two with a COPY. Otherwise it takes
   the lock and reads the head first (see Committer).
3. Callers are woken once per batch: threads one after the other (each wakes the next), asyncio
   tasks with one `call_soon_threadsafe` per event loop; receipts are built by the caller once awake.
   When many callers of a batch append in a loop, the committer waits a moment for their next
   appends, so that they share the next transaction instead of each group waiting for its own.
4. Appends from asyncio tasks skip the thread: the same committer logic runs on their event loop
   (one loop at a time per ledger, with a connection of its own; see LoopCommitter), so a request's
   task waits on PostgreSQL's socket itself instead of being handed over and woken back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool

from adapters.postgres.async_reads import AsyncStreamReads
from adapters.postgres.ledger_committer import (
    ASYNC,
    FUTURE,
    STORED_LEVEL_MIN,
    SYNC,
    AppendRequest,
    Committer,
    LoopCommitter,
    take_batch,
)
from adapters.postgres.ledger_rows import EncodedEvent, check_entry_encoding
from application.ports import Ledger
from domain.entry import Genesis, format_timestamp
from domain.hashing import hasher_named
from domain.ledger import (
    InvalidEvent,
    LedgerUnavailable,
    NewEvent,
    Receipt,
    RecordedEvent,
)
from domain.merkle import complete_subtrees, consistency_ranges, inclusion_ranges, range_hash
from domain.verify import TreeHead

log = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 4096
_LINGER_MIN_CALLERS = 8  # this many returning callers in a batch make the committer wait for them
_LINGER_SHARE = 0.5  # for at most this share of the last commit's time
_LINGER_MAX = 0.002  # and never longer than this (seconds)

ENTRY_COLUMNS = (
    "position, event_id, tenant_id, stream_id, stream_version, type, schema_version, "
    "payload::text, metadata::text, "
    "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    "prev_hash, entry_hash, chain_hash"
)
_READ_STREAM = (
    f"SELECT {ENTRY_COLUMNS} FROM ledger.events WHERE stream_id = %s AND stream_version >= %s ORDER BY stream_version"
)
_READ_STREAMS = (  # AsyncStreamReads: the streams read in one turn of an event loop, in one query
    f"SELECT {ENTRY_COLUMNS} FROM ledger.events WHERE stream_id = ANY($1) AND stream_version >= $2"
    " ORDER BY stream_id, stream_version"
)

_PROOF_HASHES = (
    "SELECT NULL::smallint, coalesce(max(size), 0), NULL::bytea FROM ledger.heads"
    " UNION ALL SELECT n.level, n.idx, n.hash FROM ledger.merkle_nodes n"
    "  JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx) USING (level, idx)"
    " UNION ALL SELECT -1, e.position, e.entry_hash FROM ledger.events e WHERE e.position = ANY(%s::bigint[])"
)


def row_to_event(row: Sequence[Any]) -> RecordedEvent:
    return RecordedEvent(
        position=row[0],
        event_id=row[1] if isinstance(row[1], uuid.UUID) else uuid.UUID(str(row[1])),
        tenant_id=row[2],
        stream_id=row[3],
        stream_version=row[4],
        type=row[5],
        schema_version=row[6],
        payload=row[7].encode(),
        metadata=row[8].encode(),
        recorded_at=row[9],
        prev_hash=bytes(row[10]),
        entry_hash=bytes(row[11]),
        chain_hash=bytes(row[12]),
    )


def _text_row_to_event(row: Sequence[Any]) -> RecordedEvent:
    """An ENTRY_COLUMNS row in PostgreSQL's text format (bytea as hex)."""
    return RecordedEvent(
        position=int(row[0]),
        event_id=uuid.UUID(row[1].decode()),
        tenant_id=row[2].decode(),
        stream_id=row[3].decode(),
        stream_version=int(row[4]),
        type=row[5].decode(),
        schema_version=int(row[6]),
        payload=row[7],
        metadata=row[8],
        recorded_at=row[9].decode(),
        prev_hash=bytes.fromhex(row[10][2:].decode()),
        entry_hash=bytes.fromhex(row[11][2:].decode()),
        chain_hash=bytes.fromhex(row[12][2:].decode()),
    )


_chain_lock = threading.Lock()  # makes "skip if abandoned, else wake" atomic against abandoning


def _wake_chain(request: AppendRequest | None) -> None:
    """Wake the first caller from `request` on that still waits."""
    with _chain_lock:
        while request is not None and request.abandoned:
            request = request.next
        if request is not None:
            request.waiter.release()


def _settle_async(requests: list[AppendRequest]) -> None:
    """Runs in the event loop: wake the awaiting tasks of one batch (one loop callback for all)."""
    for request in requests:
        future = request.waiter
        if not future.done():  # a cancelled task no longer waits (its append may still be recorded)
            future.set_result(None)


class PostgresLedger(Ledger):
    """Appends go through one committer thread per process (group commit); reads use a small pool."""

    def __init__(self, url: str, *, pool_size: int = 4, max_batch: int = MAX_BATCH_EVENTS) -> None:
        self._url = url
        self._max_batch = max_batch
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, kwargs={"autocommit": True})
        self._async_reads = AsyncStreamReads(url, _READ_STREAMS, stream_column=3, version_column=4)
        self._genesis = self._load_genesis()
        self._hasher = self._genesis.hasher
        if self._hasher.size != 32:  # the COPY framing and the frontier slicing below assume it
            raise LedgerUnavailable(f"unsupported hash size {self._hasher.size}")
        self._ledger_json = orjson.dumps(self._genesis.ledger_id)
        check_entry_encoding(self._genesis)
        self._queue: deque[AppendRequest] = deque()
        self._enqueue_lock = threading.Lock()  # orders enqueues against close()
        self._wake = threading.Event()
        self._wake_at = 1  # queue length at which an enqueue wakes the committer
        self._closed = False
        self._committer = threading.Thread(target=self._commit_loop, name="ledger-committer", daemon=True)
        self._committer.start()
        self._loop_committer: LoopCommitter | None = None  # append_async's, on one event loop at a time
        self._loop_taken_told = False

    # --- lifecycle -------------------------------------------------------------------------------

    @staticmethod
    def create(url: str, hash_alg: str = "blake3") -> Genesis:
        """Record the genesis of a new ledger unless one exists; returns the ledger's genesis."""
        hasher = hasher_named(hash_alg)
        with psycopg.connect(url, autocommit=True) as conn:
            existing = conn.execute("SELECT ledger_id, hash_alg, created_at, format FROM ledger.ledgers").fetchone()
            if existing:
                return Genesis(str(existing[0]), existing[1], existing[2], existing[3])
            genesis = Genesis(str(uuid.uuid4()), hasher.name, format_timestamp(dt.datetime.now(dt.UTC)))
            with conn.transaction():
                conn.execute("LOCK TABLE ledger.ledgers IN EXCLUSIVE MODE")
                again = conn.execute("SELECT ledger_id, hash_alg, created_at, format FROM ledger.ledgers").fetchone()
                if again:
                    return Genesis(str(again[0]), again[1], again[2], again[3])
                conn.execute(
                    "INSERT INTO ledger.ledgers (ledger_id, hash_alg, format, created_at, genesis, chain_seed)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (genesis.ledger_id, genesis.hash_alg, genesis.format, genesis.created_at, genesis.canonical(), genesis.chain_seed()),
                )
                conn.execute("INSERT INTO ledger.append_lock (ledger_id) VALUES (%s)", (genesis.ledger_id,))
            return genesis

    def _load_genesis(self) -> Genesis:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT ledger_id, hash_alg, created_at, format FROM ledger.ledgers").fetchone()
        if row is None:
            raise LedgerUnavailable("no ledger has been created in this database (run the migrations and create it)")
        return Genesis(str(row[0]), row[1], row[2], row[3])

    def close(self) -> None:
        """Commit what is queued, then stop the committer and the read pool."""
        with self._enqueue_lock:
            self._closed = True
            on_loop = self._loop_committer
        if on_loop is not None:
            on_loop.close()
        self._wake.set()
        self._committer.join(timeout=10)
        self._pool.close()
        self._async_reads.close()

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- appending -------------------------------------------------------------------------------

    def _request(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None, kind: int
    ) -> AppendRequest:
        if len(events) > self._max_batch:
            raise InvalidEvent("events", f"{len(events)} events in one append; the limit is {self._max_batch}")
        ledger_json = self._ledger_json
        encoded = [EncodedEvent(e, ledger_json) for e in events]
        if len(encoded) > 1 and len({e.event_id for e in encoded}) != len(encoded):
            raise InvalidEvent("event_id", "the same event id appears twice in one append")
        return AppendRequest(encoded, dict(expected_versions) if expected_versions else None, kind)

    def _enqueue(self, request: AppendRequest) -> None:
        with self._enqueue_lock:
            if self._closed:
                raise LedgerUnavailable("the ledger is closed")
            self._queue.append(request)
        # Setting an Event costs a lock round; while the committer is busy the flag is usually set
        # already. The committer clears it before it looks at the queue, so no wake-up is lost.
        if not self._wake.is_set() and len(self._queue) >= self._wake_at:
            self._wake.set()

    def submit(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None = None
    ) -> Future[list[Receipt]]:
        """Queue an append for the next group commit; the future carries receipts or the typed error."""
        future: Future[list[Receipt]] = Future()
        if not events:
            future.set_result([])
            return future
        request = self._request(events, expected_versions, FUTURE)
        request.waiter = future
        self._enqueue(request)
        return future

    def append(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None = None
    ) -> list[Receipt]:
        if not events:
            return []
        request = self._request(events, expected_versions, SYNC)
        request.caller = threading.get_ident()
        # A bare lock is the cheapest thing a thread can block on: the committer releases it once.
        waiter = threading.Lock()
        waiter.acquire()
        request.waiter = waiter
        self._enqueue(request)
        try:
            waiter.acquire()
        except BaseException:  # interrupted (only the main thread can be): let the others be woken
            with _chain_lock:
                request.abandoned = True
                woken = waiter.acquire(blocking=False)
            if woken:
                _wake_chain(request.next)
            raise
        _wake_chain(request.next)
        return request.outcome()

    async def append_async(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None = None
    ) -> list[Receipt]:
        if not events:
            return []
        request = self._request(events, expected_versions, ASYNC)
        loop = asyncio.get_running_loop()
        request.waiter = loop.create_future()
        on_loop = self._loop_committer
        if on_loop is None or on_loop.loop is not loop:
            on_loop = self._bind_loop_committer(loop)
        if on_loop is not None:
            with self._enqueue_lock:
                if self._closed:
                    raise LedgerUnavailable("the ledger is closed")
                on_loop.enqueue(request)
        else:  # another event loop, still open, has the loop committer: go through the thread
            request.caller = id(asyncio.current_task())
            request.loop = loop
            self._enqueue(request)
        await request.waiter
        return request.outcome()

    def _bind_loop_committer(self, loop: asyncio.AbstractEventLoop) -> LoopCommitter | None:
        """The loop committer for `loop`, made if none is bound or its loop is closed; None if taken."""
        with self._enqueue_lock:
            bound = self._loop_committer
            if bound is not None and bound.loop is not loop:
                if not bound.loop.is_closed():
                    if not self._loop_taken_told:  # slower, not wrong: say so once, for whoever profiles it
                        self._loop_taken_told = True
                        log.info("appends from a second event loop go through the committer thread: the loop"
                                 " committer is bound to the first loop that appended, which is still open")
                    return None
                bound.close()  # its loop is gone, and with it anything still queued there
                bound = None
            if bound is None and not self._closed:
                bound = self._loop_committer = LoopCommitter(loop, Committer(self._url, self._genesis),
                                                              self._max_batch)
            return bound

    def _commit_loop(self) -> None:
        committer = Committer(self._url, self._genesis)
        queue = self._queue
        wake = self._wake
        max_batch = self._max_batch
        recent: deque[set[int]] = deque(maxlen=2)  # callers of the last two batches
        while True:
            closed = self._closed  # read before the queue: once closed, nothing more is enqueued
            if not queue:
                if closed:
                    break
                wake.clear()
                if not queue and not self._closed:
                    wake.wait()
                continue
            batch = take_batch(queue, max_batch)
            started = time.perf_counter()
            committer.commit(batch)
            took = time.perf_counter() - started
            self._wake_callers(batch)
            # Callers that were in one of the last two batches too append in a loop (a worker, a
            # stream of requests on one task): they are about to append again. When there are many,
            # give them a moment to join the next batch rather than the one after it. Every
            # transaction waits for its own WAL flush (the lock serialises them), so more appends
            # per transaction is more appends per second and less CPU per append. One-off callers
            # (a task per HTTP request) never make the committer wait. The wait is bounded by a
            # share of the last commit's time.
            callers = {request.caller for request in batch if request.caller}
            returning = sum(1 for caller in callers if any(caller in earlier for earlier in recent))
            recent.append(callers)
            if returning >= _LINGER_MIN_CALLERS:
                self._linger(returning + len(queue), min(_LINGER_MAX, took * _LINGER_SHARE))
        committer.close()

    def _linger(self, target: int, timeout: float) -> None:
        """Wait until `target` requests are queued, at most `timeout` seconds."""
        self._wake_at = target
        self._wake.clear()
        if len(self._queue) < target and not self._closed:
            self._wake.wait(timeout)
        self._wake_at = 1

    @staticmethod
    def _wake_callers(batch: list[AppendRequest]) -> None:
        """Wake every caller of a committed batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[AppendRequest]] = {}
        first: AppendRequest | None = None
        last: AppendRequest | None = None
        for request in batch:
            kind = request.kind
            if kind == SYNC:
                if last is None:
                    first = request
                else:
                    last.next = request
                last = request
            elif kind == ASYNC:
                assert request.loop is not None
                by_loop.setdefault(request.loop, []).append(request)
            else:
                future = request.waiter
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(request.outcome())
                    except Exception as exc:
                        future.set_exception(exc)
        # Threads are woken one after the other, each by the one before it: woken all at once, they
        # would queue for the GIL together, and every hand-over in that queue costs a context switch
        # (7 per event at 64 threads, against 2 this way).
        _wake_chain(first)
        for loop, requests in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_async, requests)
            except RuntimeError:  # the loop was closed while its tasks waited: nobody is left to wake
                pass

    # --- reading ---------------------------------------------------------------------------------

    def genesis(self) -> Genesis:
        return self._genesis

    def head(self) -> TreeHead:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT size, root, chain_head FROM ledger.heads ORDER BY size DESC LIMIT 1").fetchone()
        if row is None:
            return TreeHead(0, self._hasher.empty_root(), self._genesis.chain_seed())
        return TreeHead(row[0], bytes(row[1]), bytes(row[2]))

    def heads(self) -> list[TreeHead]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT size, root, chain_head FROM ledger.heads ORDER BY size").fetchall()
        return [TreeHead(r[0], bytes(r[1]), bytes(r[2])) for r in rows]

    def read(self, from_position: int = 1, limit: int = 1000, tenant_id: str | None = None) -> list[RecordedEvent]:
        with self._pool.connection() as conn:
            if tenant_id is None:
                rows = conn.execute(
                    f"SELECT {ENTRY_COLUMNS} FROM ledger.events WHERE position >= %s ORDER BY position LIMIT %s",
                    (from_position, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {ENTRY_COLUMNS} FROM ledger.events WHERE tenant_id = %s AND position >= %s"
                    " ORDER BY position LIMIT %s",
                    (tenant_id, from_position, limit),
                ).fetchall()
        return [row_to_event(r) for r in rows]

    def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        with self._pool.connection() as conn:
            rows = conn.execute(_READ_STREAM, (stream_id, from_version)).fetchall()
        return [row_to_event(r) for r in rows]

    async def read_stream_async(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        return [_text_row_to_event(r) for r in await self._async_reads.read(stream_id, from_version)]

    def find(self, event_ids: Sequence[uuid.UUID]) -> list[RecordedEvent]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM ledger.events WHERE event_id = ANY(%s) ORDER BY position",
                (list(event_ids),),
            ).fetchall()
        return [row_to_event(r) for r in rows]

    def iter_entries(self, from_position: int = 1, to_position: int | None = None) -> Iterator[RecordedEvent]:
        last = to_position if to_position is not None else 2**62
        with psycopg.connect(self._url) as conn:
            with conn.cursor(name="ledger_walk") as cur:
                cur.itersize = 5000
                cur.execute(
                    f"SELECT {ENTRY_COLUMNS} FROM ledger.events WHERE position BETWEEN %s AND %s ORDER BY position",
                    (from_position, last),
                )
                for row in cur:
                    yield row_to_event(row)

    # --- proofs ----------------------------------------------------------------------------------

    def inclusion_proof(self, position: int, tree_size: int) -> list[bytes]:
        return self._hashes_for(inclusion_ranges(position - 1, tree_size), tree_size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return self._hashes_for(consistency_ranges(size1, size2), size2)

    def root_at(self, tree_size: int) -> bytes:
        if tree_size == 0:
            return self._hasher.empty_root()
        return self._hashes_for([(0, tree_size)], tree_size)[0]

    def _hashes_for(self, ranges: list[tuple[int, int]], tree_size: int) -> list[bytes]:
        """Hashes of the given leaf ranges with O(log n) reads, in one round trip."""
        wanted_nodes: set[tuple[int, int]] = set()
        wanted_leaves: set[int] = set()
        for start, end in ranges:
            for s, n in complete_subtrees(start, end):
                level = n.bit_length() - 1
                if level >= STORED_LEVEL_MIN:
                    wanted_nodes.add((level, s >> level))
                else:
                    wanted_leaves.update(range(s, s + n))
        levels = [level for level, _ in wanted_nodes]
        indexes = [index for _, index in wanted_nodes]
        with self._pool.connection() as conn:
            rows = conn.execute(_PROOF_HASHES, (levels, indexes, [i + 1 for i in wanted_leaves])).fetchall()
        nodes: dict[tuple[int, int], bytes] = {}
        leaves: dict[int, bytes] = {}
        for level, index, digest in rows:
            if level is None:
                if tree_size > index:
                    raise ValueError(f"tree size {tree_size} is beyond the ledger's size {index}")
            elif level < 0:
                leaves[index - 1] = digest
            else:
                nodes[(level, index)] = digest
        hash_children = self._hasher.hash_children

        def subtree_hash(start: int, size: int) -> bytes:
            level = size.bit_length() - 1
            if level >= STORED_LEVEL_MIN:
                return nodes[(level, start >> level)]
            level_nodes = [leaves[i] for i in range(start, start + size)]
            while len(level_nodes) > 1:
                level_nodes = [hash_children(level_nodes[i], level_nodes[i + 1]) for i in range(0, len(level_nodes), 2)]
            return level_nodes[0]

        return [range_hash(self._hasher, start, end, subtree_hash) for start, end in ranges]
