"""A connection that LISTENs on a channel, for the followers of NOTIFY (change notices, rate-limit spending)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg


@asynccontextmanager
async def listening(url: str, channel: str, name: str = "") -> AsyncIterator[psycopg.AsyncConnection]:
    """An autocommit connection on which LISTEN `channel` has taken hold, named `name` in pg_stat_activity.

    TCP keepalives: a connection whose server vanished without a word (a host lost, a partition) would
    otherwise wait for notifications forever while its process trusts what they keep up to date; with
    them it fails in about 15 s, and the follower reconnects. (A Unix socket has no such failure.)
    """
    named = {"application_name": name} if name else {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, keepalives=1, keepalives_idle=5,
                                                     keepalives_interval=2, keepalives_count=5, **named) as conn:
        await conn.execute(f"LISTEN {channel}")
        yield conn
