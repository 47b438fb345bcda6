"""The ledger's append transaction: one committer per thread or event loop, and how it commits a batch.

PostgresLedger (ledger_store.py) queues AppendRequests; a Committer takes a batch of them into one
transaction (locked, or speculative on the head it wrote last), and LoopCommitter drives one on an
event loop for append_async. The rows it writes are encoded by ledger_rows.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import blake3
import orjson
import psycopg
from psycopg.generators import execute
from psycopg.pq import Escaping, ExecStatus, PGconn, PGresult, TransactionStatus
from psycopg.waiting import Wait, wait, wait_async

from adapters.postgres.ledger_rows import COPY_HEADER, COPY_TRAILER, LEN32, EncodedEvent, pack_tail, row_values
from adapters.postgres.libpq import check_results
from domain.entry import Genesis, format_timestamp
from domain.hashing import NODE_PREFIX
from domain.ledger import (
    ConcurrencyError,
    EventIdConflict,
    LedgerUnavailable,
    Receipt,
)

log = logging.getLogger(__name__)

STORED_LEVEL_MIN = 4
"""Merkle subtrees of 2**4 = 16 leaves and more are stored; smaller ones are rehashed from leaves."""

_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_HASH_CONSTRUCTORS: dict[str, Callable[[bytes], Any]] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}
_ONE_MICROSECOND = dt.timedelta(microseconds=1)

# --- the append transaction ------------------------------------------------------------------------
# It is driven through psycopg's libpq layer (psycopg.pq) with simple-protocol query strings, one or
# two round trips per batch in the steady state and almost no Python between them: psycopg's cursor
# API cost about 30 µs of Python per statement here, which, serialised on the committer, capped
# throughput. The statements are prepared once per connection (PREPARE/EXECUTE), so PostgreSQL plans
# them once. Values spliced into query strings are integers, hex digits, UUIDs, a timestamp we
# format, names that match the NewEvent patterns (no quotes possible), or text quoted by
# PQescapeLiteral or _literal().

_PREPARE = (
    # _literal() relies on it; it is PostgreSQL's default, set here in case a server is configured otherwise.
    "SET standard_conforming_strings = on;"
    " PREPARE nexus_ledger_lock AS SELECT 1 FROM ledger.append_lock WHERE ledger_id = '{ledger_id}' FOR UPDATE;"
    # The head, which of the given event ids are recorded already, and the given streams' versions.
    " PREPARE nexus_ledger_read(uuid[], json) AS SELECT"
    " (SELECT json_build_array(size, encode(chain_head, 'hex'), encode(frontier, 'hex'))"
    "  FROM ledger.heads ORDER BY size DESC LIMIT 1),"
    " (SELECT json_agg(json_build_array(event_id, position, stream_id, stream_version,"
    "  encode(entry_hash, 'hex'), encode(chain_hash, 'hex'), type, payload::text))"
    "  FROM ledger.events WHERE event_id = ANY($1)),"
    " (SELECT json_object_agg(s.id, (SELECT max(e.stream_version) FROM ledger.events e WHERE e.stream_id = s.id))"
    "  FROM json_array_elements_text($2) AS s(id));"
    # Fails (division by zero: no privilege is needed to raise it) unless the latest tree head is
    # exactly ($1, $2). An aggregate, so PostgreSQL cannot fold the division away while planning.
    " PREPARE nexus_ledger_expect(bigint, text) AS SELECT"
    "  1 / (count(*) = 1 AND bool_and(size = $1 AND chain_head = decode($2, 'hex')))::int"
    "  FROM ledger.heads WHERE size >= $1;"
    " PREPARE nexus_ledger_nodes(smallint[], bigint[], text[]) AS INSERT INTO ledger.merkle_nodes (level, idx, hash)"
    "  SELECT l, i, decode(h, 'hex') FROM unnest($1, $2, $3) AS n(l, i, h);"
    " PREPARE nexus_ledger_head(bigint, text, text, text, timestamptz) AS"
    "  INSERT INTO ledger.heads (size, root, chain_head, frontier, committed_at)"
    "  VALUES ($1, decode($2, 'hex'), decode($3, 'hex'), decode($4, 'hex'), $5)"
)
_PREPARED_STATEMENTS = 6  # results of _PREPARE: the SET and five PREPAREs
_READ = "EXECUTE nexus_ledger_read('{{{ids}}}', {streams})"
_LOCK_AND_READ = "BEGIN; EXECUTE nexus_ledger_lock; " + _READ
_EXPECT = "EXECUTE nexus_ledger_expect({size}, '{chain}')"
_LOCK_AND_EXPECT = "BEGIN; EXECUTE nexus_ledger_lock; " + _EXPECT + ";"
_WRITE_NODES = " EXECUTE nexus_ledger_nodes('{{{levels}}}', '{{{indexes}}}', '{{{hashes}}}');"
# The tree head (and Merkle nodes) go first and the entries last in one query string, with COMMIT at
# the end. Entries go as a binary COPY: the server runs the statements before it, asks for the data,
# and commits once it has arrived (two round trips). A batch of a few events goes as INSERT ...
# VALUES instead, which saves the round trip that COPY needs; for more rows COPY is cheaper for
# PostgreSQL (at 8 rows VALUES cost it about 10 µs more per row). The COPY's column order puts the fields the caller's thread encodes first and those the
# committer fills in (position, version, time, hashes) last, so a row is two byte strings joined.
_WRITE_HEAD = " EXECUTE nexus_ledger_head({size}, '{root}', '{chain}', '{frontier}', '{now}');"
_EVENT_COLUMNS = (
    "(event_id, tenant_id, stream_id, type, schema_version, payload, metadata,"
    " position, stream_version, recorded_at, prev_hash, entry_hash, chain_hash)"
)
_COPY_EVENTS = f" COPY ledger.events {_EVENT_COLUMNS} FROM STDIN (FORMAT BINARY); COMMIT"
_INSERT_EVENTS = f" INSERT INTO ledger.events {_EVENT_COLUMNS} VALUES "
_SMALL_BATCH = 4
# A proof's stored nodes (level >= 4), its leaves (level -1: entry hashes by position) and the
# ledger's size (level NULL), in one statement: one snapshot and one round trip.
_COPY_CHUNK = 1 << 20
_POLL_INTERVAL = 0.1  # seconds per poll() call; psycopg's default of 0 would spin
_VERSION_CACHE_MAX = 100_000
_CHECK_IDS_BATCHES = 100
"""After a batch met an event id that was recorded already, look ids up before this many batches."""


SYNC, ASYNC, FUTURE = 0, 1, 2


class AppendRequest:
    """One caller's append: its events, its version expectations, and how to wake it."""

    __slots__ = (
        "events", "expected", "kind", "caller", "waiter", "loop", "fresh", "receipts", "error", "next", "abandoned"
    )

    def __init__(self, events: list[EncodedEvent], expected: Mapping[str, int | None] | None, kind: int) -> None:
        self.events = events
        self.expected = expected
        self.kind = kind
        self.caller = 0  # the calling thread or task: tells callers that come back from one-off callers
        self.waiter: Any = None  # a held lock (sync), an asyncio future (async), a Future (submit)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fresh: list[tuple[int, int, bytes, bytes]] | None = None  # (position, version, leaf, chain)
        self.receipts: list[Receipt] | None = None  # an idempotent replay: the original receipts
        self.error: Exception | None = None
        self.next: AppendRequest | None = None  # the next thread to wake after this one (sync appends)
        self.abandoned = False  # the caller stopped waiting (interrupted): skip it when waking

    def settle(self, outcome: list[Receipt] | Exception) -> None:
        if isinstance(outcome, Exception):
            self.error = outcome
        else:
            self.receipts = outcome

    def outcome(self) -> list[Receipt]:
        """The receipts, built here in the caller's thread, or the typed error."""
        if self.error is not None:
            raise self.error
        if self.receipts is not None:
            return self.receipts
        assert self.fresh is not None
        return [
            Receipt(enc.event_id, position, enc.stream_id, version, leaf, chain)
            for enc, (position, version, leaf, chain) in zip(self.events, self.fresh, strict=True)
        ]


class _HeadMoved(Exception):
    """Another process appended since the head a speculative batch was hashed on."""


@dataclass
class _Head:
    """A tree head as the committer continues from it: size, chain head and compact-range roots."""

    size: int
    chain: bytes
    roots: list[bytes]


@dataclass
class _Written:
    """A batch hashed onto a head: its rows (COPY data, or VALUES when small), nodes and the new head."""

    copy_data: bytes | None
    values: list[str] | None
    head: _Head
    root: bytes
    nodes: tuple[list[str], list[str], list[str]]  # levels, indexes, hashes (hex)
    recorded_at: str
    versions: dict[str, int]


class LoopCommitter:
    """append_async's committer: a Committer driven on the callers' event loop.

    A request's task appends without handing its batch to the committer thread and being woken back
    by it, and no committer thread competes with the requests for the GIL: at 50 requests/s that
    took 0.3-0.75 ms off the gateway's p50 on the eleventh session's machine (docs/gateway.md, where
    earlier variants measured worse on faster machines are also described). Appends queued while a
    transaction is in flight share the next one, as with the thread. Its own connection, head and versions; against the committer thread (sync
    appends, submit) it is one more writer, serialised by the append lock like another process's.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, committer: Committer, max_batch: int) -> None:
        self.loop = loop
        self._committer = committer
        self._max_batch = max_batch
        self._queue: deque[AppendRequest] = deque()
        self._draining: asyncio.Task[None] | None = None
        self._closed = False

    def enqueue(self, request: AppendRequest) -> None:
        """In the loop's thread."""
        self._queue.append(request)
        if self._draining is None:
            self._draining = self.loop.create_task(self._drain())

    def close(self) -> None:
        """From any thread: what is queued is still committed; the connection closes once idle."""
        self._closed = True
        if self._draining is None:
            self._committer.close()

    async def _drain(self) -> None:
        queue = self._queue
        batch: list[AppendRequest] = []
        try:
            while queue:
                batch = take_batch(queue, self._max_batch)
                await self._committer.commit_async(batch)
                for request in batch:
                    if not request.waiter.done():  # a cancelled task no longer waits (its append may be recorded)
                        request.waiter.set_result(None)
                batch = []
        except BaseException:  # cancelled, as its loop shuts down: the transaction's outcome is unknown
            self._committer.reset()
            for request in [*batch, *queue]:
                if not request.waiter.done():
                    request.waiter.set_exception(LedgerUnavailable("the append's outcome is unknown: its event loop"
                                                                   " stopped while it was committed"))
            queue.clear()
            raise
        finally:
            self._draining = None
            if self._closed:
                self._committer.close()


def take_batch(queue: deque[AppendRequest], max_batch: int) -> list[AppendRequest]:
    """Everything queued, in order, up to `max_batch` events (and at least one request)."""
    batch: list[AppendRequest] = []
    count = 0
    while queue:
        n = len(queue[0].events)
        if batch and count + n > max_batch:
            break
        batch.append(queue.popleft())
        count += n
    return batch


class Committer:
    """A committer's side (the thread's, or an event loop's): its connection, what it knows, the transaction.

    Two ways to commit a batch; either way, positions and versions only commit if, under the append
    lock, the head is the one they continue:

    * locked: BEGIN, take the lock, read the head and the streams' versions, hash, write, COMMIT.
    * speculative, when the head found under the lock last time was the one this committer had
      written before (nobody else appends): hash onto that remembered head and those remembered
      versions before taking the lock, then BEGIN, take the lock, have the server check that the
      head is still the one hashed onto (else everything is rolled back and the batch goes the
      locked way), write, COMMIT. One round trip fewer, and the lock is held for less time.

    Event ids are not looked up before writing: the unique index refuses an id that is recorded
    already, and the batch is then committed again with its ids looked up first (as are the next
    batches for a while), so that a retry gets its original receipts.
    """

    def __init__(self, url: str, genesis: Genesis) -> None:
        self._url = url
        self._genesis = genesis
        # The hash object's constructor, called directly: one Python call fewer per digest, and there
        # are three or four digests per event.
        self._new_hash = _HASH_CONSTRUCTORS[genesis.hash_alg]
        if self._new_hash(b"nexus").digest() != genesis.hasher.digest(b"nexus"):
            raise LedgerUnavailable(f"{genesis.hash_alg} here differs from domain.hashing")
        self._conn: psycopg.Connection | None = None
        self._versions: dict[str, int] = {}  # exact as of self._head
        self._head: _Head | None = None  # after our last commit
        self._speculate = False  # nobody else appended between our last two commits
        self._check_ids = 0  # batches left that look their event ids up before writing

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def commit(self, batch: list[AppendRequest]) -> None:
        """Commit a batch from the committer thread, blocking on PostgreSQL; never raises."""
        steps = _Driven(self._steps(batch))
        while (step := steps.next()) is not _DONE:
            try:
                steps.reply(self.open() if step is None else _run(self._pgconn(), *step))
            except Exception as exc:
                steps.fail(exc)

    async def commit_async(self, batch: list[AppendRequest]) -> None:
        """Commit a batch on the running event loop: the same steps, waiting on the socket in the loop."""
        steps = _Driven(self._steps(batch))
        while (step := steps.next()) is not _DONE:
            try:  # connecting blocks (a slow server would block the loop with it): it goes to a thread
                steps.reply(await asyncio.to_thread(self.open) if step is None else await _run_async(self._pgconn(), *step))
            except Exception as exc:
                steps.fail(exc)

    def _steps(self, batch: list[AppendRequest]) -> _Steps[None]:
        """Commit a batch, setting every request's outcome; never raises. Driven by commit or commit_async."""
        try:
            yield from self._attempt(batch)
            return
        except Exception as exc:  # the transaction rolled back: nothing of this batch is written
            self.reset()
            error = exc
        if isinstance(error, psycopg.errors.UniqueViolation):
            # An event id in the batch is recorded already (a retry), or a stream presumed new was
            # not: commit the batch again, this time looking its ids and versions up first, so that
            # the retry gets its original receipts and the stale expectation its ConcurrencyError.
            log.info("ledger batch met a recorded event id or stream version (%s); committing it again with both"
                     " looked up", error)
            self._check_ids = _CHECK_IDS_BATCHES
            try:
                yield from self._attempt(batch)
                return
            except Exception as exc:
                self.reset()
                error = exc
        if len(batch) > 1 and isinstance(error, (psycopg.DataError, psycopg.IntegrityError)):
            # Something in one request made PostgreSQL refuse the rows; commit the requests one by
            # one so that it fails alone instead of failing its neighbours.
            log.warning("ledger batch refused (%s); committing its %d requests one by one", error, len(batch))
            for request in batch:
                try:
                    yield from self._attempt([request])
                except Exception as exc:
                    self.reset()
                    request.error = LedgerUnavailable(f"the append was not recorded: {exc}")
            return
        log.warning("ledger commit failed: %s", error)
        for request in batch:
            request.error = LedgerUnavailable(f"the append was not recorded: {error}")

    def reset(self) -> None:
        """After a failure nothing is known: the outcome of the last transaction may be unknown too."""
        self.close()
        self._forget()

    def _forget(self) -> None:
        self._versions.clear()
        self._head = None
        self._speculate = False

    def _connection(self) -> _Steps[PGconn]:
        if self._conn is None or self._conn.closed:
            yield None  # the driver opens it
            self._forget()
        return self._pgconn()

    def open(self) -> None:
        """Connect and prepare the statements (blocking)."""
        # autocommit: the transaction is delimited by explicit BEGIN and COMMIT in the query strings.
        conn = psycopg.connect(self._url, autocommit=True, client_encoding="UTF8")
        try:
            _run(conn.pgconn, _PREPARE.format(ledger_id=uuid.UUID(self._genesis.ledger_id)), _PREPARED_STATEMENTS)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _pgconn(self) -> PGconn:
        assert self._conn is not None
        return self._conn.pgconn

    def _attempt(self, batch: list[AppendRequest]) -> _Steps[None]:
        """One append transaction for a batch; sets each request's outcome, or raises with nothing written."""
        pgconn = yield from self._connection()
        check_ids = self._check_ids > 0
        if check_ids:
            self._check_ids -= 1
        if len(self._versions) > _VERSION_CACHE_MAX:
            self._forget()
        if self._speculate and self._head is not None:
            try:
                if (yield from self._speculative(pgconn, batch, self._head, check_ids)):
                    return
            except _HeadMoved:
                if pgconn.transaction_status != TransactionStatus.IDLE:
                    yield _Query("ROLLBACK", 1)
            self._forget()
        yield from self._locked(pgconn, batch, check_ids)

    def _speculative(self, pgconn: PGconn, batch: list[AppendRequest], head: _Head, check_ids: bool) -> _Steps[bool]:
        """Hash onto the remembered head, then write if it is still the head; False: go the locked way."""
        streams, duplicates = _scan(batch)
        cached = self._versions
        unknown = [s for s in streams if s not in cached]
        if unknown and not check_ids:
            # A stream whose first append here expects version 0 is presumed new, not read: every
            # inference has a stream of its own, so this saves a round trip per gateway request. If
            # the stream does exist, its version 1 is taken and the unique index refuses the batch,
            # which commit() then commits again the locked way, reading every version.
            presumed = _presumed_new(batch, unknown)
            if presumed:
                cached.update(dict.fromkeys(presumed, 0))
                unknown = [s for s in unknown if s not in presumed]
        known: dict[str, list[Any]] = {}
        if unknown or check_ids:
            # Read without the lock: versions of streams this committer has not seen, and which of the
            # batch's event ids are recorded. Both are exact as long as the head is still the
            # remembered one, which the read reports and the write checks again under the lock
            # (and an id once recorded stays recorded).
            ids = ",".join(enc.id_text for request in batch for enc in request.events) if check_ids else ""
            [state] = yield _Query(_READ.format(ids=ids, streams=_json_literal(pgconn, unknown)), 1)
            found_head, known_json, found_versions = (state.get_value(0, i) for i in range(3))
            if found_head is None or orjson.loads(found_head)[:2] != [head.size, head.chain.hex()]:
                return False
            for s, v in orjson.loads(found_versions or b"{}").items():
                cached[s] = v or 0
            if known_json:
                known = {row[0]: row for row in orjson.loads(known_json)}
        versions = {s: cached[s] for s in streams}
        written = yield from self._hash(pgconn, batch, _Head(head.size, head.chain, list(head.roots)), known, versions,
                                        duplicates)
        expect = _EXPECT.format(size=head.size, chain=head.chain.hex())
        try:
            if written is None:  # nothing new: the refusals hold if the head has not moved since
                yield _Query(expect, 1)
                return True
            # The check is a statement of its own after the lock, so (READ COMMITTED: a fresh snapshot
            # per statement) it sees the head committed by whoever held the lock before us; see
            # _locked for why every append takes this lock.
            statement, results = self._write(written)
            yield _Query(_LOCK_AND_EXPECT.format(size=head.size, chain=head.chain.hex()) + statement, 3 + results,
                         written.copy_data, True)
        except psycopg.errors.DivisionByZero:
            raise _HeadMoved() from None
        self._committed(written)
        return True

    def _locked(self, pgconn: PGconn, batch: list[AppendRequest], check_ids: bool) -> _Steps[None]:
        streams, duplicates = _scan(batch)
        ids = ",".join(enc.id_text for request in batch for enc in request.events) if check_ids else ""
        # Every writer in every process takes this row lock first, so the head read below, the
        # version checks and the positions assigned are race-free, and commit order equals
        # position order: a reader tailing by position can never see N+1 before N. A sequence
        # would hand out positions without that guarantee (gaps on rollback, commits out of
        # order); the lock's cost is shared by the whole batch (group commit), which is why one
        # transaction carries many appends.
        # The read travels in the same round trip as the lock but is a separate statement, so it
        # runs only once the lock is granted, and in READ COMMITTED each statement takes a fresh
        # snapshot: the head, the known event ids and the stream versions it reads are those
        # committed by whoever held the lock before us. (One statement that locked and read at
        # once would read with a snapshot taken before it waited for the lock.)
        [_, _, state] = yield _Query(_LOCK_AND_READ.format(ids=ids, streams=_json_literal(pgconn, streams)), 3)
        head_json, known_json, versions_json = (state.get_value(0, i) for i in range(3))
        if head_json is None:
            head = _Head(0, self._genesis.chain_seed(), [])
        else:
            size, chain_hex, frontier_hex = orjson.loads(head_json)
            frontier = bytes.fromhex(frontier_hex)
            head = _Head(size, bytes.fromhex(chain_hex), [frontier[i : i + 32] for i in range(0, len(frontier), 32)])
        if len(head.roots) != head.size.bit_count():
            raise LedgerUnavailable(f"the stored frontier of size {head.size} has {len(head.roots)} roots")
        # The next batch may speculate if nobody else appended between our last commit and this one.
        continuous = self._head is not None and (self._head.size, self._head.chain) == (head.size, head.chain)
        known: dict[str, list[Any]] = {row[0]: row for row in orjson.loads(known_json)} if known_json else {}
        versions = {s: v or 0 for s, v in orjson.loads(versions_json or b"{}").items()}
        self._forget()
        self._versions.update(versions)
        start = _Head(head.size, head.chain, list(head.roots))
        written = yield from self._hash(pgconn, batch, start, known, versions, duplicates)
        if written is None:  # nothing new to write: replays and refusals only
            yield _Query("ROLLBACK", 1)
            self._head = head
            self._speculate = continuous
            return
        statement, results = self._write(written)
        yield _Query(statement, results, written.copy_data, True)
        self._committed(written)
        self._speculate = continuous

    def _committed(self, written: _Written) -> None:
        self._head = written.head
        self._versions.update(written.versions)
        self._speculate = True

    @staticmethod
    def _write(written: _Written) -> tuple[str, int]:
        """The statements that write a hashed batch, and how many results they give before any COPY data."""
        levels, indexes, hashes = written.nodes
        statement = ""
        if levels:
            statement = _WRITE_NODES.format(levels=",".join(levels), indexes=",".join(indexes), hashes=",".join(hashes))
        head = written.head
        statement += _WRITE_HEAD.format(
            size=head.size, root=written.root.hex(), chain=head.chain.hex(), frontier=b"".join(head.roots).hex(),
            now=written.recorded_at,
        )
        if written.values is not None:
            return statement + _INSERT_EVENTS + ",".join(written.values) + "; COMMIT", 3 + bool(levels)
        return statement + _COPY_EVENTS, 2 + bool(levels)

    def _hash(
        self,
        pgconn: PGconn,
        batch: list[AppendRequest],
        head: _Head,
        known: dict[str, list[Any]],
        versions: dict[str, int],
        duplicates: bool,
    ) -> _Steps[_Written | None]:
        """Decide every request (replay, refusal or new entries) and hash the new ones onto `head`.

        `head` and `versions` are updated in place; returns None when there is nothing to write.
        """
        new_hash = self._new_hash
        size, chain, roots = head.size, head.chain, head.roots
        now = dt.datetime.now(dt.UTC)
        recorded_at = format_timestamp(now)
        recorded_part = b',"recorded_at":' + orjson.dumps(recorded_at)
        micros = (now - _PG_EPOCH) // _ONE_MICROSECOND
        parts: list[bytes] = [COPY_HEADER]
        small = sum(len(request.events) for request in batch) <= _SMALL_BATCH
        values: list[str] = []
        node_levels: list[str] = []
        node_indexes: list[str] = []
        node_hashes: list[str] = []
        # Only when the same event id is in two requests of the batch, or recorded already, do the
        # requests need to be checked against each other and the store (idempotent retries).
        in_batch: dict[str, tuple[tuple[int, int, bytes, bytes], EncodedEvent]] = {}
        track = bool(known) or duplicates
        node_prefix = NODE_PREFIX
        len32 = LEN32
        pack_row_tail = pack_tail

        for request in batch:
            request.fresh = request.receipts = request.error = None
            if track:
                replay = _replayed(request, known, in_batch)
                if replay is not None:
                    request.settle(replay)
                    continue
            if request.expected:
                conflict = _conflict(request.expected, versions)
                if conflict is not None:
                    # A retry of an append that was recorded finds its stream moved on by itself:
                    # look its ids up before calling it a conflict (recorded entries never go away).
                    ids = ",".join(e.id_text for e in request.events)
                    [state] = yield _Query(_READ.format(ids=ids, streams="'[]'"), 1)
                    found = state.get_value(0, 1)
                    if found:
                        known.update((row[0], row) for row in orjson.loads(found))
                        track = True
                        replay = _replayed(request, known, in_batch)
                        if replay is not None:
                            request.settle(replay)
                            continue
                    request.error = conflict
                    continue
            fresh: list[tuple[int, int, bytes, bytes]] = []
            for enc in request.events:
                size += 1
                stream_id = enc.stream_id
                version = versions[stream_id] + 1
                versions[stream_id] = version
                leaf = new_hash(
                    b"".join((enc.entry_head, b"%d" % size, recorded_part, enc.entry_mid, b"%d" % version, enc.entry_tail))
                ).digest()
                link = new_hash(node_prefix + chain + leaf).digest()
                # The compact range as a binary counter: each carry completes an aligned subtree.
                node = leaf
                index = size - 1
                level = 0
                while index & 1:
                    node = new_hash(node_prefix + roots.pop() + node).digest()
                    index >>= 1
                    level += 1
                    if level >= STORED_LEVEL_MIN:
                        node_levels.append(str(level))
                        node_indexes.append(str(index))
                        node_hashes.append(node.hex())
                roots.append(node)
                parts += (enc.row_head, pack_row_tail(8, size, 8, version, 8, micros), len32, chain, len32, leaf, len32, link)
                if small:
                    values.append(row_values(enc, size, version, recorded_at, chain, leaf, link))
                chain = link
                outcome = (size, version, leaf, link)
                fresh.append(outcome)
                if track:
                    in_batch[enc.id_text] = (outcome, enc)
            request.fresh = fresh

        if len(parts) == 1:
            return None
        parts.append(COPY_TRAILER)
        root = roots[-1]
        for left in reversed(roots[:-1]):
            root = new_hash(node_prefix + left + root).digest()
        return _Written(
            copy_data=None if small else b"".join(parts),
            values=values if small else None,
            head=_Head(size, chain, roots),
            root=root,
            nodes=(node_levels, node_indexes, node_hashes),
            recorded_at=recorded_at,
            versions=versions,
        )


def _scan(batch: list[AppendRequest]) -> tuple[list[str], bool]:
    """The streams a batch touches, and whether two of its requests carry the same event id."""
    streams: set[str] = set()
    ids: set[str] = set()
    count = 0
    for request in batch:
        for enc in request.events:
            streams.add(enc.stream_id)
            ids.add(enc.id_text)
        count += len(request.events)
        if request.expected:
            streams.update(request.expected)
    return list(streams), len(ids) != count


def _presumed_new(batch: list[AppendRequest], unknown: list[str]) -> set[str]:
    """The streams among `unknown` whose first request in the batch writes to them expecting version 0.

    Only a stream the request writes to: if it exists after all, the unique index refuses the batch. A
    stream a request only expects (a condition, such as the gateway's API key at its version) is read.
    """
    left = set(unknown)
    presumed: set[str] = set()
    for request in batch:
        expected = request.expected or {}
        written = {enc.stream_id for enc in request.events}
        for stream_id in written | set(expected):
            if stream_id in left:
                left.discard(stream_id)
                if stream_id in written and expected.get(stream_id, -1) == 0:
                    presumed.add(stream_id)
        if not left:
            break
    return presumed


def _json_literal(pgconn: PGconn, values: list[str]) -> str:
    return Escaping(pgconn).escape_literal(orjson.dumps(values)).decode()

class _Query(NamedTuple):
    """A step of the committer's transaction: one query string, run by _run or _run_async."""

    statement: str
    expected: int  # results before any COPY data
    copy_in: bytes | None = None
    commits: bool = False  # the last statement is a COMMIT that must have committed


class _Driven:
    """A steps generator being driven: each step's outcome goes back in, as its results or its error."""

    def __init__(self, steps: _Steps[None]) -> None:
        self._steps = steps
        self._resume: Callable[[Any], _Query | None] = steps.send
        self._outcome: Any = None

    def next(self) -> _Query | None | object:
        try:
            return self._resume(self._outcome)
        except StopIteration:
            return _DONE

    def reply(self, outcome: Any) -> None:
        self._resume, self._outcome = self._steps.send, outcome

    def fail(self, error: Exception) -> None:
        self._resume, self._outcome = self._steps.throw, error


_DONE = object()
_T = TypeVar("_T")
_Steps = Generator[_Query | None, Any, _T]
"""The committer's logic as a generator: it yields a _Query and is sent its results (or thrown its
error), or yields None to have its driver open the connection. One logic, two drivers: the committer
thread blocks on the socket, an event loop waits on it (see LoopCommitter)."""


def _run(
    pgconn: PGconn, statement: str, expected: int, copy_in: bytes | None = None, commits: bool = False
) -> list[PGresult]:
    """Send a simple-protocol query string, feed its COPY FROM STDIN if any, and return its results.

    Raises the typed psycopg error of the first failed statement; the server skips the rest of the
    string after a failure, so a failed transaction never reaches its COMMIT. With `commits`, the
    last statement must be a COMMIT that committed: PostgreSQL answers a COMMIT of a transaction
    that failed with ROLLBACK rather than an error.
    """
    pgconn.send_query(statement.encode())
    results = wait(execute(pgconn), pgconn.socket, interval=_POLL_INTERVAL)  # in C, the GIL released
    if copy_in is not None:
        _check_copy_in(results, expected)
        wait(_copy_gen(pgconn, copy_in), pgconn.socket, interval=_POLL_INTERVAL)
        results = results[:-1] + wait(execute(pgconn), pgconn.socket, interval=_POLL_INTERVAL)
        expected += 1
    _check_done(results, expected, commits)
    return results


async def _run_async(
    pgconn: PGconn, statement: str, expected: int, copy_in: bytes | None = None, commits: bool = False
) -> list[PGresult]:
    """_run, waiting for the socket in the running event loop."""
    pgconn.send_query(statement.encode())
    results = await wait_async(execute(pgconn), pgconn.socket, interval=_POLL_INTERVAL)
    if copy_in is not None:
        _check_copy_in(results, expected)
        await wait_async(_copy_gen(pgconn, copy_in), pgconn.socket, interval=_POLL_INTERVAL)
        results = results[:-1] + await wait_async(execute(pgconn), pgconn.socket, interval=_POLL_INTERVAL)
        expected += 1
    _check_done(results, expected, commits)
    return results


def _check_copy_in(results: list[PGresult], expected: int) -> None:
    check_results(results, expected)
    if results[-1].status != ExecStatus.COPY_IN:
        raise psycopg.InternalError(f"expected COPY IN, got {ExecStatus(results[-1].status).name}")


def _check_done(results: list[PGresult], expected: int, commits: bool) -> None:
    check_results(results, expected)
    if commits and results[-1].command_status != b"COMMIT":
        raise psycopg.InternalError(f"expected COMMIT, got {results[-1].command_status!r}")


def _copy_gen(pgconn: PGconn, data: bytes) -> Iterator[Wait]:
    view = memoryview(data)
    for start in range(0, len(view), _COPY_CHUNK):
        while pgconn.put_copy_data(view[start : start + _COPY_CHUNK]) == 0:
            yield Wait.W  # libpq's buffer is full: wait until the socket drains
            pgconn.flush()
    while pgconn.put_copy_end(None) == 0:
        yield Wait.W
        pgconn.flush()


def _replayed(
    request: AppendRequest,
    known: dict[str, list[Any]],
    in_batch: dict[str, tuple[tuple[int, int, bytes, bytes], EncodedEvent]],
) -> list[Receipt] | Exception | None:
    """Receipts of an append that was already recorded (a retry), or None if it is new."""
    found: list[Receipt] = []
    for enc in request.events:
        event_id = enc.event_id
        if enc.id_text in known:
            _, position, stream_id, version, leaf_hex, chain_hex, type_, payload = known[enc.id_text]
            if stream_id != enc.stream_id or type_ != enc.type or payload.encode() != enc.payload:
                return EventIdConflict(event_id, f"recorded on {stream_id!r} as {type_} at position {position}")
            found.append(Receipt(event_id, position, stream_id, version, bytes.fromhex(leaf_hex), bytes.fromhex(chain_hex)))
        elif enc.id_text in in_batch:
            (position, version, leaf, chain), original = in_batch[enc.id_text]
            if original.stream_id != enc.stream_id or original.type != enc.type or original.payload != enc.payload:
                return EventIdConflict(event_id, "sent twice with different content")
            found.append(Receipt(event_id, position, enc.stream_id, version, leaf, chain))
    if not found:
        return None
    if len(found) != len(request.events):
        return EventIdConflict(found[0].event_id, "some events of this append are recorded and others are not")
    return found


def _conflict(expected: Mapping[str, int | None], versions: dict[str, int]) -> ConcurrencyError | None:
    for stream_id, version in expected.items():
        if version is None:
            continue
        actual = versions.get(stream_id, 0)
        if actual != version:
            return ConcurrencyError(stream_id, version, actual)
    return None
