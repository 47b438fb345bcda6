"""A connection that LISTENs on a channel, for the followers of NOTIFY (change notices, rate-limit spending),
and the probes that prove notifications actually reach it.

A connection can listen and hear nothing: through a pooler in transaction mode (PgBouncer's default),
which does not keep a session's LISTEN, the LISTEN succeeds and no notification ever arrives. So a
follower proves delivery: it sends a probe (`pg_notify` from a connection of its own, since a session
hears its own notifications even through such a pooler) and waits for it on the listening one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

PROBE_PREFIX = '{"probe":'  # a follower's own test of delivery, which every follower of the channel hears and skips


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


def is_probe(payload: str) -> bool:
    return payload.startswith(PROBE_PREFIX)


class DeliveryProbes:
    """Probes of one listening connection: one awaited at a time, the next sent `every_s` after the last came
    back. The follower hands each probe it hears to `came_back`, asks `late` whether the awaited one is
    overdue, and calls `send_when_due` as it goes; times are its event loop's."""

    def __init__(self, channel: str, url: str, *, timeout_s: float, every_s: float) -> None:
        self.channel = channel
        self.url = url  # where probes are sent from: the listener's database, unless a test says otherwise
        self.timeout_s = timeout_s
        self.every_s = every_s
        self._awaited: str | None = None
        self._deadline = 0.0
        self._next = 0.0

    def restart(self) -> None:
        """A new connection listens: send a probe at once."""
        self._awaited, self._next = None, 0.0

    def came_back(self, payload: str, now: float) -> bool:
        """Whether `payload` is the probe awaited, which is then awaited no more."""
        if self._awaited is None or payload != self._awaited:
            return False  # another follower's, or one given up on
        self._awaited, self._next = None, now + self.every_s
        return True

    def late(self, now: float) -> bool:
        return self._awaited is not None and now > self._deadline

    def give_up(self, now: float, retry_after_s: float) -> None:
        """Stop waiting for the awaited probe; send the next one in `retry_after_s`."""
        self._awaited, self._next = None, now + retry_after_s

    async def send_when_due(self, now: float) -> None:
        if self._awaited is None and now >= self._next:
            payload = f'{PROBE_PREFIX} "{uuid.uuid4()}"}}'
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            self._awaited, self._deadline = payload, now + self.timeout_s
