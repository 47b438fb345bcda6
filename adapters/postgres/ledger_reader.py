"""Read-only access to the ledger tables for verification, over one connection and one snapshot.

`PostgresLedgerReader` reads through a connection the caller owns, in whatever transaction the caller
holds (the tamper tests verify rows they changed but did not commit). `open_snapshot` opens a
REPEATABLE READ, READ ONLY transaction and exports its snapshot, so that worker processes can open
their own connections onto exactly the same state with `SnapshotOpener`.

The fast path (domain.segment) hashes each entry as the server renders it: one binary COPY per
segment, one bytea per row, `prev_hash || entry_hash || chain_hash || 0x00 || entry JSON`. Splitting
columns and splicing them into the canonical entry in Python cost twice what hashing does, while the
server renders it in the time it takes to send the row. The rendering is the canonical entry of
domain.entry.entry_bytes: fixed keys in RFC 8785 order; event_id, position, versions and
recorded_at printed by PostgreSQL exactly as ledger_store hashes them; payload and metadata as
stored; strings through pg_catalog.to_json, whose escaping is RFC 8785's (tests/property checks
this). Soundness does not even need that last point, only that the rendering is a JSON text that
decodes to exactly the row's columns (to_json escapes, so no column can imitate the glue between
keys): then a rendering that hashes to the stored entry hash, which the writer computed from the
original columns, can only come from the original columns. A rendering that is not canonical could
only cause a false alarm, which the precise path (columns decoded and encoded by domain.entry)
would clear. The hashes come with their lengths checked, so that no column can shift bytes into its
neighbour; a row failing that check renders as NULL and goes to the precise path.
"""

from __future__ import annotations

import select
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
import psycopg
from psycopg import pq, sql

from adapters.postgres.ledger_store import STORED_LEVEL_MIN, row_to_event
from application.verification import GenesisRecord, LedgerSource
from domain.checkpoint import Checkpoint
from domain.entry import FORMAT_VERSION
from domain.ledger import RecordedEvent
from domain.verify import TreeHead

# The same text ledger_store hashes (format_timestamp): RFC 3339 UTC with six fractional digits.
_RECORDED_AT = "pg_catalog.to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _record_sql(ledger_id: str, client_utf8: bool) -> sql.Composable:
    """One record of domain.segment per row: the stored hashes, then the leaf preimage.

    textsend() hands over the text's bytes in the client encoding without re-validating them, which
    is the UTF-8 that was hashed when the client encoding is UTF-8; convert_to() otherwise.
    """
    glue = sql.SQL(
        "pg_catalog.concat('{{\"event_id\":\"', event_id, {ledger}, metadata, ',\"payload\":', payload,"
        " ',\"position\":', position, ',\"recorded_at\":\"', {recorded_at}, '\",\"schema_version\":', schema_version,"
        " ',\"stream_id\":', pg_catalog.to_json(stream_id), ',\"stream_version\":', stream_version,"
        " ',\"tenant_id\":', pg_catalog.to_json(tenant_id), ',\"type\":', pg_catalog.to_json(type), '}}')"
    ).format(
        ledger=sql.Literal(
            f'","format":{FORMAT_VERSION},"ledger_id":{orjson.dumps(ledger_id).decode()},"metadata":'
        ),
        recorded_at=sql.SQL(_RECORDED_AT),
    )
    as_bytes = "pg_catalog.textsend({})" if client_utf8 else "pg_catalog.convert_to({}, 'UTF8')"
    return sql.SQL(
        "CASE WHEN octet_length(prev_hash) = 32 AND octet_length(entry_hash) = 32 AND octet_length(chain_hash) = 32"
        " THEN prev_hash || entry_hash || chain_hash || '\\x00'::bytea || " + as_bytes + " END"
    ).format(glue)


_ENTRY = (
    "SELECT position, event_id, tenant_id, stream_id, stream_version, type, schema_version, payload::text,"
    f" metadata::text, coalesce({_RECORDED_AT}, recorded_at::text), prev_hash, entry_hash, chain_hash"
    " FROM ledger.events WHERE position > %s ORDER BY position LIMIT 1"
)

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = len(_COPY_SIGNATURE) + 8  # flags and header-extension length (always 0 from the server)
_FIELD_HEADER = 6  # int16 field count + int32 length of the only field


class PostgresLedgerReader(LedgerSource):
    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    @property
    def stored_level_min(self) -> int:
        return STORED_LEVEL_MIN

    def genesis_records(self) -> list[GenesisRecord]:
        rows = self._conn.execute(
            "SELECT ledger_id::text, hash_alg, format, created_at, genesis, chain_seed FROM ledger.ledgers"
        ).fetchall()
        return [GenesisRecord(r[0], r[1], r[2], r[3], bytes(r[4]), bytes(r[5])) for r in rows]

    def last_sizes(self) -> tuple[int, int]:
        row = self._conn.execute(
            "SELECT (SELECT coalesce(max(size), 0) FROM ledger.heads),"
            " (SELECT coalesce(max(tree_size), 0) FROM ledger.checkpoints)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def records(self, ledger_id: str, after: int | None, upto: int | None, chunk: int = 64) -> Generator[list[memoryview]]:
        bounds = []
        if after is not None:
            bounds.append(sql.SQL("position > {}").format(sql.Literal(after)))
        if upto is not None:
            bounds.append(sql.SQL("position <= {}").format(sql.Literal(upto)))
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(bounds) if bounds else sql.SQL("")
        query = sql.SQL("COPY (SELECT {} FROM ledger.events{} ORDER BY position) TO STDOUT (FORMAT BINARY)").format(
            _record_sql(ledger_id, self._conn.info.encoding == "utf-8"), where
        )
        return _copy_records(self._conn, query.as_bytes(self._conn), chunk)

    def entry_after(self, position: int) -> RecordedEvent | None:
        row = self._conn.execute(_ENTRY, (position,)).fetchone()
        if row is None:
            return None
        return row_to_event(row)

    def chain_hash_at(self, position: int) -> bytes | None:
        row = self._conn.execute("SELECT chain_hash FROM ledger.events WHERE position = %s", (position,)).fetchone()
        return bytes(row[0]) if row else None

    def entry_hashes(self, positions: Sequence[int]) -> dict[int, bytes]:
        if not positions:
            return {}
        rows = self._conn.execute(
            "SELECT position, entry_hash FROM ledger.events WHERE position = ANY(%s)", (list(positions),)
        ).fetchall()
        return {r[0]: bytes(r[1]) for r in rows}

    def nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if not keys:
            return {}
        levels, indices = zip(*keys, strict=True)
        rows = self._conn.execute(
            "SELECT n.level, n.idx, n.hash FROM unnest(%s::smallint[], %s::bigint[]) AS w(level, idx)"
            " JOIN ledger.merkle_nodes n USING (level, idx)",
            (list(levels), list(indices)),
        ).fetchall()
        return {(r[0], r[1]): bytes(r[2]) for r in rows}

    def nodes_in(self, ranges: Sequence[tuple[int, int, int]]) -> dict[tuple[int, int], bytes]:
        if not ranges:
            return {}
        levels, firsts, ends = zip(*ranges, strict=True)
        rows = self._conn.execute(
            "SELECT n.level, n.idx, n.hash FROM unnest(%s::smallint[], %s::bigint[], %s::bigint[]) AS r(level, lo, hi)"
            " JOIN ledger.merkle_nodes n ON n.level = r.level AND n.idx >= r.lo AND n.idx < r.hi",
            (list(levels), list(firsts), list(ends)),
        ).fetchall()
        return {(r[0], r[1]): bytes(r[2]) for r in rows}

    def node_levels(self, ranges: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, bytes]]:
        if not ranges:
            return {}
        levels, firsts, ends = zip(*ranges, strict=True)
        rows = self._conn.execute(
            "SELECT n.level, min(n.idx), count(*) FILTER (WHERE octet_length(n.hash) = 32),"
            " string_agg(n.hash, ''::bytea ORDER BY n.idx)"
            " FROM unnest(%s::smallint[], %s::bigint[], %s::bigint[]) AS r(level, lo, hi)"
            " JOIN ledger.merkle_nodes n ON n.level = r.level AND n.idx >= r.lo AND n.idx < r.hi GROUP BY n.level",
            (list(levels), list(firsts), list(ends)),
        ).fetchall()
        return {r[0]: (r[1], r[2], bytes(r[3])) for r in rows}

    def stray_nodes(self, size: int, min_level: int) -> list[tuple[int, int]]:
        top = size.bit_length() - 1 if size else min_level - 1  # the highest level a tree of `size` has
        levels = list(range(min_level, top + 1))
        limits = [size >> level for level in levels]
        rows = self._conn.execute(
            "SELECT level, idx FROM ledger.merkle_nodes WHERE level < %(min)s OR level > %(top)s"
            " UNION ALL SELECT n.level, n.idx FROM unnest(%(levels)s::smallint[], %(limits)s::bigint[]) AS b(level, lim)"
            " JOIN ledger.merkle_nodes n ON n.level = b.level AND n.idx >= b.lim"
            " UNION ALL SELECT n.level, n.idx FROM unnest(%(levels)s::smallint[]) AS b(level)"
            " JOIN ledger.merkle_nodes n ON n.level = b.level AND n.idx < 0",
            {"min": min_level, "top": max(top, min_level - 1), "levels": levels, "limits": limits},
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def heads(self, after: int, upto: int | None) -> list[TreeHead]:
        rows = self._conn.execute(
            "SELECT size, root, chain_head, frontier FROM ledger.heads WHERE size > %s AND size <= %s ORDER BY size",
            (after, upto if upto is not None else 2**62),
        ).fetchall()
        return [TreeHead(r[0], bytes(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    def checkpoints(self, after: int | None, upto: int | None) -> list[Checkpoint]:
        rows = self._conn.execute(
            "SELECT ledger_id::text, hash_alg, tree_size, root, chain_head, signed_at, key_id, signature"
            " FROM ledger.checkpoints WHERE tree_size > %s AND tree_size <= %s ORDER BY tree_size, key_id",
            (after if after is not None else -(2**62), upto if upto is not None else 2**62),
        ).fetchall()
        return [Checkpoint(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), r[5], r[6], bytes(r[7])) for r in rows]

    def signing_keys(self) -> dict[str, bytes]:
        return {r[0]: bytes(r[1]) for r in self._conn.execute("SELECT key_id, public_key FROM ledger.signing_keys")}


def _copy_records(conn: psycopg.Connection, query: bytes, chunk: int) -> Generator[list[memoryview]]:
    """The single field of each row of a binary COPY ... TO STDOUT, in batches, straight from libpq.

    psycopg's Copy.read() costs a generator round trip per row, a fifth of the whole verification;
    libpq hands out a row it has buffered for the cost of one call. Batches are small on purpose:
    the server keeps producing rows into the socket while the caller hashes the batch it has, so
    both work at once (big batches would leave one of them idle at a time).
    """
    if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        conn.execute("SELECT 1")  # let psycopg open the transaction the COPY must belong to
    pgconn = conn.pgconn
    with conn.lock:
        pgconn.send_query(query)
        started = pgconn.get_result()
        if started is None or started.status != pq.ExecStatus.COPY_OUT:
            _drain_results(pgconn)
            raise psycopg.OperationalError(f"COPY did not start: {_message(started)}")
        get, socket, consume = pgconn.get_copy_data, pgconn.socket, pgconn.consume_input
        batch: list[memoryview] = []
        append = batch.append
        size, data = _first_row(pgconn)
        try:
            while size > 0:
                if size > 2:  # 2: the trailer, a bare field count of -1
                    append(data[_FIELD_HEADER:])  # a view of libpq's buffer: nothing is copied
                    if len(batch) >= chunk:
                        yield batch
                        batch = []
                        append = batch.append
                size, data = get(1)
                if size == 0:  # nothing buffered: read what the socket holds, else wait for the server
                    consume()
                    size, data = get(1)
                    while size == 0:
                        select.select([socket], [], [])
                        consume()
                        size, data = get(1)
        except GeneratorExit:
            # The caller stopped early (it found a fault). Read the COPY to its end: the only other
            # way to end it is to cancel it, which would abort the caller's transaction.
            while get(0)[0] > 0:
                pass
            _drain_results(pgconn)
            raise
        finished = pgconn.get_result()
        _drain_results(pgconn)
        if finished is None or finished.status != pq.ExecStatus.COMMAND_OK:
            raise psycopg.OperationalError(f"COPY failed: {_message(finished)}")
        if batch:
            yield batch


def _first_row(pgconn: pq.abc.PGconn) -> tuple[int, memoryview]:
    """The first CopyData message without the stream header it starts with (it may hold no row)."""
    size, data = pgconn.get_copy_data(0)
    if size < 0:
        return size, data
    if bytes(data[: len(_COPY_SIGNATURE)]) != _COPY_SIGNATURE:
        raise ValueError("not a PostgreSQL binary COPY stream")
    data = data[_COPY_HEADER:]
    if not data:  # the header came alone
        return pgconn.get_copy_data(0)
    return len(data), data


def _drain_results(pgconn: pq.abc.PGconn) -> None:
    while pgconn.get_result() is not None:
        pass


def _message(result: pq.abc.PGresult | None) -> str:
    return result.error_message.decode(errors="replace") if result is not None else "no result"


@contextmanager
def open_snapshot(url: str, snapshot: str | None = None) -> Iterator[tuple[PostgresLedgerReader, str]]:
    """A reader over one REPEATABLE READ, READ ONLY transaction; yields it with its exported snapshot id.

    With `snapshot`, the transaction adopts that exported snapshot instead (a worker joining a run).
    """
    with psycopg.connect(url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot is not None:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            exported = snapshot
        else:
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            exported = row[0]
        try:
            yield PostgresLedgerReader(conn), exported
        finally:
            conn.rollback()


@dataclass(frozen=True)
class SnapshotOpener:
    """Picklable recipe for a worker process to read the same snapshot as the process that started it."""

    url: str
    snapshot: str

    @contextmanager
    def __call__(self) -> Iterator[LedgerSource]:
        with open_snapshot(self.url, self.snapshot) as (reader, _):
            yield reader
