"""The ledger in PostgreSQL: group commit, one serialising lock, hash chain and Merkle tree in SQL rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from application.ports import Ledger
from domain.canonical import NotCanonicalisable, canonical_json
from domain.entry import Genesis, chain_link, entry_bytes, entry_hash, format_timestamp
from domain.hashing import hasher_named
from domain.ledger import (
    MAX_PAYLOAD_BYTES,
    ConcurrencyError,
    EventIdConflict,
    InvalidEvent,
    LedgerUnavailable,
    NewEvent,
    Receipt,
    RecordedEvent,
)
from domain.merkle import CompactRange, complete_subtrees, consistency_ranges, inclusion_ranges, range_hash
from domain.verify import TreeHead

log = logging.getLogger(__name__)

STORED_LEVEL_MIN = 4
"""Merkle subtrees of 2**4 = 16 leaves and more are stored; smaller ones are rehashed from leaves."""

MAX_BATCH_EVENTS = 4096

ENTRY_COLUMNS = (
    "position, event_id, tenant_id, stream_id, stream_version, type, schema_version, "
    "payload::text, metadata::text, "
    "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    "prev_hash, entry_hash, chain_hash"
)


def row_to_event(row: Sequence[Any]) -> RecordedEvent:
    return RecordedEvent(
        position=row[0],
        event_id=row[1],
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


@dataclass
class _Encoded:
    """An event with its canonical payload bytes, computed in the caller's thread before queueing."""

    event: NewEvent
    payload: bytes
    metadata: bytes


@dataclass
class _Request:
    events: list[_Encoded]
    expected: Mapping[str, int | None]
    future: Future[list[Receipt]] = field(default_factory=Future)


def encode(event: NewEvent) -> _Encoded:
    try:
        payload = canonical_json(dict(event.payload))
    except (NotCanonicalisable, TypeError) as exc:
        raise InvalidEvent("payload", str(exc)) from None
    try:
        metadata = canonical_json(dict(event.metadata))
    except (NotCanonicalisable, TypeError) as exc:
        raise InvalidEvent("metadata", str(exc)) from None
    if len(payload) + len(metadata) > MAX_PAYLOAD_BYTES:
        raise InvalidEvent(
            "payload", f"{len(payload) + len(metadata)} bytes of payload and metadata; the limit is {MAX_PAYLOAD_BYTES}"
        )
    return _Encoded(event, payload, metadata)


class PostgresLedger(Ledger):
    """Appends go through one committer thread per process (group commit); reads use a small pool."""

    def __init__(self, url: str, *, pool_size: int = 4, max_batch: int = MAX_BATCH_EVENTS) -> None:
        self._url = url
        self._max_batch = max_batch
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, kwargs={"autocommit": True})
        self._genesis = self._load_genesis()
        self._hasher = self._genesis.hasher
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._committer = threading.Thread(target=self._commit_loop, name="ledger-committer", daemon=True)
        self._committer.start()

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
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._committer.join(timeout=10)
        self._pool.close()

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- appending -------------------------------------------------------------------------------

    def submit(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None = None
    ) -> Future[list[Receipt]]:
        """Queue an append for the next group commit; the future carries receipts or the typed error."""
        if not events:
            done: Future[list[Receipt]] = Future()
            done.set_result([])
            return done
        if len(events) > self._max_batch:
            raise InvalidEvent("events", f"{len(events)} events in one append; the limit is {self._max_batch}")
        encoded = [encode(e) for e in events]
        ids = [e.event_id for e in events]
        if len(set(ids)) != len(ids):
            raise InvalidEvent("event_id", "the same event id appears twice in one append")
        request = _Request(encoded, dict(expected_versions or {}))
        with self._cond:
            if self._closed:
                raise LedgerUnavailable("the ledger is closed")
            self._queue.append(request)
            if len(self._queue) == 1:
                self._cond.notify()
        return request.future

    def append(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None = None
    ) -> list[Receipt]:
        return self.submit(events, expected_versions).result()

    async def append_async(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None = None
    ) -> list[Receipt]:
        return await asyncio.wrap_future(self.submit(events, expected_versions))

    def _commit_loop(self) -> None:
        conn: psycopg.Connection | None = None
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    break
                batch = self._take_batch()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._url)
                _GroupCommit(conn, self._genesis, batch).run()
            except Exception as exc:  # the whole transaction rolled back: nothing of this batch is written
                log.warning("ledger commit failed: %s", exc)
                error = LedgerUnavailable(f"the append was not recorded: {exc}")
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                if conn is not None:
                    try:
                        conn.close()
                    finally:
                        conn = None
        if conn is not None:
            conn.close()

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        count = 0
        while self._queue and (not batch or count + len(self._queue[0].events) <= self._max_batch):
            request = self._queue.pop(0)
            batch.append(request)
            count += len(request.events)
        return batch

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
            rows = conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM ledger.events WHERE stream_id = %s AND stream_version >= %s"
                " ORDER BY stream_version",
                (stream_id, from_version),
            ).fetchall()
        return [row_to_event(r) for r in rows]

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
        """Hashes of the given leaf ranges with O(log n) reads: one query for nodes, one for leaves."""
        with self._pool.connection() as conn:
            size_now = conn.execute("SELECT coalesce(max(size), 0) FROM ledger.heads").fetchone()[0]  # type: ignore[index]
            if tree_size > size_now:
                raise ValueError(f"tree size {tree_size} is beyond the ledger's size {size_now}")
            wanted_nodes: set[tuple[int, int]] = set()
            wanted_leaves: set[int] = set()
            for start, end in ranges:
                for s, n in complete_subtrees(start, end):
                    level = n.bit_length() - 1
                    if level >= STORED_LEVEL_MIN:
                        wanted_nodes.add((level, s >> level))
                    else:
                        wanted_leaves.update(range(s, s + n))
            nodes: dict[tuple[int, int], bytes] = {}
            if wanted_nodes:
                levels, idxs = zip(*sorted(wanted_nodes), strict=True)
                for level, idx, h in conn.execute(
                    "SELECT n.level, n.idx, n.hash FROM ledger.merkle_nodes n"
                    " JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx) USING (level, idx)",
                    (list(levels), list(idxs)),
                ):
                    nodes[(level, idx)] = bytes(h)
            leaves: dict[int, bytes] = {}
            if wanted_leaves:
                for position, h in conn.execute(
                    "SELECT position, entry_hash FROM ledger.events WHERE position = ANY(%s)",
                    ([i + 1 for i in wanted_leaves],),
                ):
                    leaves[position - 1] = bytes(h)

        def subtree_hash(start: int, size: int) -> bytes:
            level = size.bit_length() - 1
            if level >= STORED_LEVEL_MIN:
                return nodes[(level, start >> level)]
            level_nodes = [leaves[i] for i in range(start, start + size)]
            while len(level_nodes) > 1:
                level_nodes = [
                    self._hasher.hash_children(level_nodes[i], level_nodes[i + 1]) for i in range(0, len(level_nodes), 2)
                ]
            return level_nodes[0]

        return [range_hash(self._hasher, start, end, subtree_hash) for start, end in ranges]


class _GroupCommit:
    """One append transaction carrying a batch of independent requests."""

    def __init__(self, conn: psycopg.Connection, genesis: Genesis, batch: list[_Request]) -> None:
        self.conn = conn
        self.genesis = genesis
        self.hasher = genesis.hasher
        self.batch = batch

    def run(self) -> None:
        conn = self.conn
        resolved: list[tuple[_Request, list[Receipt] | Exception]] = []
        with conn.transaction():
            # Every writer in every process takes this row lock first, so the head read below, the
            # version checks and the positions assigned are race-free, and commit order equals
            # position order: a reader tailing by position can never see N+1 before N. A sequence
            # would hand out positions without that guarantee (gaps on rollback, commits out of
            # order); the lock's cost is shared by the whole batch (group commit), which is why one
            # transaction carries many appends.
            conn.execute("SELECT 1 FROM ledger.append_lock WHERE ledger_id = %s FOR UPDATE", (self.genesis.ledger_id,))
            head = conn.execute(
                "SELECT size, chain_head, frontier FROM ledger.heads ORDER BY size DESC LIMIT 1"
            ).fetchone()
            if head is None:
                size, chain, tree = 0, self.genesis.chain_seed(), CompactRange(self.hasher)
            else:
                size, chain = head[0], bytes(head[1])
                tree = CompactRange.from_bytes(self.hasher, size, bytes(head[2]))

            all_ids = [e.event.event_id for r in self.batch for e in r.events]
            existing = {
                row[0]: row
                for row in conn.execute(
                    "SELECT event_id, position, stream_id, stream_version, entry_hash, chain_hash, type, payload::text"
                    " FROM ledger.events WHERE event_id = ANY(%s)",
                    (all_ids,),
                )
            }
            streams = sorted(
                {e.event.stream_id for r in self.batch for e in r.events} | {s for r in self.batch for s in r.expected}
            )
            versions: dict[str, int] = {
                s: v or 0
                for s, v in conn.execute(
                    "SELECT s.id, (SELECT max(stream_version) FROM ledger.events e WHERE e.stream_id = s.id)"
                    " FROM unnest(%s::text[]) AS s(id)",
                    (streams,),
                )
            }

            now = dt.datetime.now(dt.UTC)
            recorded_at = format_timestamp(now)
            rows: list[tuple[Any, ...]] = []
            nodes: list[tuple[int, int, bytes]] = []
            in_batch: dict[uuid.UUID, tuple[Receipt, _Encoded]] = {}

            def keep_node(level: int, idx: int, h: bytes) -> None:
                if level >= STORED_LEVEL_MIN:
                    nodes.append((level, idx, h))

            for request in self.batch:
                outcome = self._replayed(request, existing, in_batch)
                if outcome is not None:
                    resolved.append((request, outcome))
                    continue
                conflict = self._conflict(request, versions)
                if conflict is not None:
                    resolved.append((request, conflict))
                    continue
                receipts = []
                for enc in request.events:
                    ev = enc.event
                    size += 1
                    version = versions[ev.stream_id] + 1
                    versions[ev.stream_id] = version
                    leaf = entry_hash(
                        self.hasher,
                        entry_bytes(
                            ledger_id=self.genesis.ledger_id,
                            position=size,
                            event_id=str(ev.event_id),
                            tenant_id=ev.tenant_id,
                            stream_id=ev.stream_id,
                            stream_version=version,
                            type=ev.type,
                            schema_version=ev.schema_version,
                            payload=enc.payload,
                            metadata=enc.metadata,
                            recorded_at=recorded_at,
                        ),
                    )
                    prev = chain
                    chain = chain_link(self.hasher, prev, leaf)
                    tree.append(leaf, keep_node)
                    rows.append(
                        (
                            size, ev.event_id, ev.tenant_id, ev.stream_id, version, ev.type, ev.schema_version,
                            enc.payload.decode(), enc.metadata.decode(), now, prev, leaf, chain,
                        )
                    )
                    receipt = Receipt(ev.event_id, size, ev.stream_id, version, leaf, chain)
                    receipts.append(receipt)
                    in_batch[ev.event_id] = (receipt, enc)
                resolved.append((request, receipts))

            if rows:
                with conn.cursor().copy(
                    "COPY ledger.events (position, event_id, tenant_id, stream_id, stream_version, type,"
                    " schema_version, payload, metadata, recorded_at, prev_hash, entry_hash, chain_hash)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(
                        ["int8", "uuid", "text", "text", "int8", "text", "int4", "text", "text", "timestamptz",
                         "bytea", "bytea", "bytea"]
                    )
                    for row in rows:
                        copy.write_row(row)
                if nodes:
                    with conn.cursor().copy(
                        "COPY ledger.merkle_nodes (level, idx, hash) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(["int2", "int8", "bytea"])
                        for node in nodes:
                            copy.write_row(node)
                conn.execute(
                    "INSERT INTO ledger.heads (size, root, chain_head, frontier, committed_at) VALUES (%s, %s, %s, %s, %s)",
                    (size, tree.root(), chain, tree.to_bytes(), now),
                )
        for request, outcome in resolved:
            if isinstance(outcome, Exception):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)

    def _replayed(
        self, request: _Request, existing: dict[uuid.UUID, Any], in_batch: dict[uuid.UUID, tuple[Receipt, _Encoded]]
    ) -> list[Receipt] | Exception | None:
        """Receipts of an append that was already recorded (a retry), or None if it is new."""
        found: list[Receipt] = []
        for enc in request.events:
            ev = enc.event
            if ev.event_id in existing:
                _, position, stream_id, version, leaf, chain, type_, payload = existing[ev.event_id]
                if stream_id != ev.stream_id or type_ != ev.type or payload.encode() != enc.payload:
                    return EventIdConflict(ev.event_id, f"recorded on {stream_id!r} as {type_} at position {position}")
                found.append(Receipt(ev.event_id, position, stream_id, version, bytes(leaf), bytes(chain)))
            elif ev.event_id in in_batch:
                receipt, original = in_batch[ev.event_id]
                if original.event.stream_id != ev.stream_id or original.event.type != ev.type or original.payload != enc.payload:
                    return EventIdConflict(ev.event_id, "sent twice with different content")
                found.append(receipt)
        if not found:
            return None
        if len(found) != len(request.events):
            return EventIdConflict(found[0].event_id, "some events of this append are recorded and others are not")
        return found

    @staticmethod
    def _conflict(request: _Request, versions: dict[str, int]) -> ConcurrencyError | None:
        for stream_id, expected in request.expected.items():
            if expected is None:
                continue
            actual = versions.get(stream_id, 0)
            if actual != expected:
                return ConcurrencyError(stream_id, expected, actual)
        return None
