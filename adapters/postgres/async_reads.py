"""Reads on a request's path, on the event loop: a few async connections per loop, no worker thread.

A read handed to a worker thread cost 1 to 1.6 ms here under load (the thread's wake-up and its turns
at the GIL against the event loop and the ledger's committer), for a query that takes 0.2 ms; the same
query on an async connection costs the event loop about 0.2 ms and nothing else. Connections belong
to the loop that opened them (psycopg's async connections cannot change loops), so each loop has its
own: tests run several loops, the API one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg

CONNECTIONS_PER_LOOP = 8


class _LoopConnections:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.slots = asyncio.Semaphore(size)  # bounds this loop's connections: bursts wait, not connect


class AsyncReads:
    def __init__(self, url: str, connections_per_loop: int = CONNECTIONS_PER_LOOP) -> None:
        self._url = url
        self._size = connections_per_loop
        self._loops: dict[int, _LoopConnections] = {}
        self._closed = False

    def _here(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        found = self._loops.get(id(loop))
        if found is None or found.loop is not loop:
            self._drop_dead_loops()
            found = self._loops[id(loop)] = _LoopConnections(loop, self._size)
        return found

    async def fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one prepared query, autocommit (one snapshot per statement)."""
        if self._closed:
            raise psycopg.OperationalError("the ledger's async reads are closed")
        here = self._here()
        async with here.slots:
            conn = here.idle.pop() if here.idle else await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            try:
                cursor = await conn.execute(query, params, prepare=True)
                rows = await cursor.fetchall()
            except BaseException:
                await _close_quietly(conn)  # its state is unknown (cancelled mid-query, or broken)
                raise
            if self._closed or conn.closed:
                await _close_quietly(conn)
            else:
                here.idle.append(conn)
            return rows

    def _drop_dead_loops(self) -> None:
        for key, gone in [(k, c) for k, c in self._loops.items() if c.loop.is_closed()]:
            del self._loops[key]
            for conn in gone.idle:
                conn.pgconn.finish()  # its loop is gone: close the socket directly

    def close(self) -> None:
        """From any thread: idle connections are closed now, busy ones when their read returns."""
        self._closed = True
        for connections in self._loops.values():
            for conn in connections.idle:
                conn.pgconn.finish()
            connections.idle.clear()
        self._loops.clear()


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except Exception:  # closing a broken connection
        pass
