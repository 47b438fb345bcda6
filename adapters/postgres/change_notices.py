"""Change notices over PostgreSQL's LISTEN/NOTIFY: the triggers of migration 0008 announce, in the
committing transaction, changes to what API processes cache; this follows them on a connection of its own.

NOTIFY is delivered only once its transaction commits, and only to sessions listening then. So a
follower tells its listener `resumed` each time it starts listening (first, and after every lost
connection): whatever changed while it was not listening must be read again; and `interrupted` as soon
as it finds the connection lost. It does not work through a pooler in transaction
mode (PgBouncer's default), which does not keep a session's LISTEN; set NEXUS_CHANGE_NOTICES=off there,
and the caches fall back to their TTLs.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from adapters.postgres.listening import listening
from application.ports import ChangeListener, ChangeNotice, ChangeNotices

log = logging.getLogger(__name__)

CHANNEL = "nexus_changes"


def parse_notice(payload: str) -> ChangeNotice:
    """A notice from its NOTIFY payload; ValueError if it is not one the triggers send."""
    try:
        fields = orjson.loads(payload)
        if "data_key" in fields:
            tenant_id, subject_id = fields["data_key"]
            return ChangeNotice(str(tenant_id), subject_id=str(subject_id))
        return ChangeNotice(str(fields["tenant"]), stream_id=str(fields["stream"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a change notice: {payload[:200]!r}") from exc


class PostgresChangeNotices(ChangeNotices):
    def __init__(self, url: str, *, reconnect_after_s: float = 1.0) -> None:
        self._url = url
        self._reconnect_after_s = reconnect_after_s

    async def follow(self, listener: ChangeListener, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self._listen(listener, stop)
                except Exception as exc:  # a lost connection, mostly: never let the follower die
                    listener.interrupted()
                    log.warning("change notices interrupted (%s); what is cached is read again once they resume",
                                exc)
                try:
                    await asyncio.wait_for(stop.wait(), self._reconnect_after_s)
                except TimeoutError:
                    pass
        finally:
            listener.interrupted()  # nobody listens any more

    async def _listen(self, listener: ChangeListener, stop: asyncio.Event) -> None:
        # a server lost without a word is noticed in about 15 s (listening.py), and the reconnection forgets
        # everything
        async with listening(self._url, CHANNEL) as conn:
            listener.resumed()  # changes committed before the LISTEN took hold were not announced to us
            while not stop.is_set():
                async for notify in conn.notifies(timeout=0.5):  # returns at the timeout, to look at `stop`
                    try:
                        notice = parse_notice(notify.payload)
                    except ValueError as exc:  # something changed, and we cannot tell what: start afresh
                        log.warning("%s", exc)
                        listener.resumed()
                        continue
                    listener.changed(notice)
