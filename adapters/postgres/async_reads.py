"""Stream reads on a request's path, on the event loop: no worker thread, one round trip per loop turn.

A read handed to a worker thread cost 1 to 1.6 ms here under load (the thread's wake-up and its turns
at the GIL against the event loop and the ledger's committer), for a query that takes 0.2 ms. On the
loop instead:

* Reads asked for in the same turn of the loop share one query (`stream_id = ANY(...)`). A gateway
  request asks for two in the same turn, its API key's stream and its tenant's (the key's
  confirmation and the content switch), so it pays one round trip, not two.
* The query goes through libpq directly (psycopg.pq, a prepared statement, text results): psycopg's
  cursor machinery cost 160-180 µs of CPU per read here, this path 75-85 µs (docs/gateway.md, Performance).
* Connections belong to the loop that opened them (an event loop watches their sockets), so each
  loop has its own few: tests run several loops, the API one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.generators import execute
from psycopg.waiting import wait_async

from adapters.postgres.libpq import check_results

CONNECTIONS_PER_LOOP = 8
_STATEMENT = b"nexus_read_streams"
_POLL_INTERVAL = 0.1  # seconds: how often a wait wakes to check for interruption; 0 would spin
Row = tuple[bytes | None, ...]  # one row's values in PostgreSQL's text format


class _Wanted:
    __slots__ = ("stream_id", "from_version", "future")

    def __init__(self, stream_id: str, from_version: int, future: asyncio.Future[list[Row]]) -> None:
        self.stream_id = stream_id
        self.from_version = from_version
        self.future = future


class _LoopReads:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.slots = asyncio.Semaphore(size)  # bounds this loop's connections: bursts wait, not connect
        self.wanted: list[_Wanted] = []  # asked for since the pending query's task was made; it takes them
        self.fetching: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references to tasks


class AsyncStreamReads:
    """Reads of whole streams (from a version on) with a query of the form

        SELECT ... FROM ... WHERE stream_id = ANY($1) AND stream_version >= $2 ORDER BY stream_id, stream_version

    ($1 text[], $2 bigint) whose `stream_column` and `version_column` give each row's stream and version."""

    def __init__(self, url: str, query: str, *, stream_column: int, version_column: int,
                 connections_per_loop: int = CONNECTIONS_PER_LOOP) -> None:
        self._url = url
        self._query = query.encode()
        self._stream_column = stream_column
        self._version_column = version_column
        self._size = connections_per_loop
        self._loops: dict[int, _LoopReads] = {}
        self._closed = False

    def _here(self) -> _LoopReads:
        loop = asyncio.get_running_loop()
        found = self._loops.get(id(loop))
        if found is None or found.loop is not loop:
            self._drop_dead_loops()
            found = self._loops[id(loop)] = _LoopReads(loop, self._size)
        return found

    async def read(self, stream_id: str, from_version: int = 1) -> list[Row]:
        """The stream's rows from `from_version` on, as one snapshot (autocommit, one statement)."""
        if self._closed:
            raise psycopg.OperationalError("the ledger's async reads are closed")
        here = self._here()
        future: asyncio.Future[list[Row]] = here.loop.create_future()
        if not here.wanted:
            # The query's own task, started at the loop's next turn: it takes every read asked for
            # until then. A caller that stops waiting does not cut the query short for the others.
            task = asyncio.ensure_future(self._fetch(here))
            here.fetching.add(task)
            task.add_done_callback(here.fetching.discard)
        here.wanted.append(_Wanted(stream_id, from_version, future))
        return await future

    async def _fetch(self, here: _LoopReads) -> None:
        wanted, here.wanted = here.wanted, []
        try:
            rows = await self._query_rows(here, sorted({w.stream_id for w in wanted}),
                                          min(w.from_version for w in wanted))
        except BaseException as exc:
            for w in wanted:
                if not w.future.done():
                    w.future.set_exception(exc if isinstance(exc, Exception) else
                                           psycopg.OperationalError(f"the read was interrupted: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            return
        by_stream: dict[str, list[Row]] = {}
        stream_column = self._stream_column
        for row in rows:
            by_stream.setdefault(row[stream_column].decode(), []).append(row)  # type: ignore[union-attr]
        version_column = self._version_column
        for w in wanted:
            if w.future.done():  # its caller stopped waiting
                continue
            found = by_stream.get(w.stream_id, [])
            if w.from_version > 1:
                found = [row for row in found if int(row[version_column]) >= w.from_version]  # type: ignore[arg-type]
            w.future.set_result(found)

    async def _query_rows(self, here: _LoopReads, streams: list[str], from_version: int) -> list[Row]:
        async with here.slots:
            conn = here.idle.pop() if here.idle else await self._connect()
            try:
                pgconn = conn.pgconn
                pgconn.send_query_prepared(_STATEMENT, [_text_array(streams), b"%d" % from_version])
                results = await wait_async(execute(pgconn), pgconn.socket, interval=_POLL_INTERVAL)
                check_results(results, 1)
                result = results[0]
                rows = [tuple(result.get_value(r, c) for c in range(result.nfields)) for r in range(result.ntuples)]
            except BaseException:
                await _close_quietly(conn)  # its state is unknown (cancelled mid-query, or broken)
                raise
            if self._closed or conn.closed:
                await _close_quietly(conn)
            else:
                here.idle.append(conn)
            return rows

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, client_encoding="UTF8")
        try:
            pgconn = conn.pgconn
            # bytea columns come back as text: hex, whatever the server's default
            pgconn.send_query(b"SET bytea_output = 'hex'; PREPARE " + _STATEMENT + b"(text[], bigint) AS " + self._query)
            check_results(await wait_async(execute(pgconn), pgconn.socket, interval=_POLL_INTERVAL), 2)
        except BaseException:
            await _close_quietly(conn)
            raise
        return conn

    def _drop_dead_loops(self) -> None:
        for key, gone in [(k, c) for k, c in self._loops.items() if c.loop.is_closed()]:
            del self._loops[key]
            for conn in gone.idle:
                conn.pgconn.finish()  # its loop is gone: close the socket directly

    def close(self) -> None:
        """From any thread: idle connections are closed now, busy ones when their read returns."""
        self._closed = True
        for loop_reads in self._loops.values():
            for conn in loop_reads.idle:
                conn.pgconn.finish()
            loop_reads.idle.clear()
        self._loops.clear()


def _text_array(values: Sequence[str]) -> bytes:
    """A text[] literal: every element quoted, backslashes and quotes escaped."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return ("{" + ",".join(quoted) + "}").encode()


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except Exception:  # closing a broken connection
        pass
