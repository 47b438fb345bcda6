"""Change notices over PostgreSQL's LISTEN/NOTIFY: the triggers of migration 0008 announce, in the
committing transaction, changes to what API processes cache; this follows them on a connection of its own.

NOTIFY is delivered only once its transaction commits, and only to sessions listening then. So a
follower tells its listener `resumed` each time it starts listening (first, and after every lost
connection): whatever changed while it was not listening must be read again; and `interrupted` as soon
as it finds the connection lost.

A connection can also listen and hear nothing (behind a pooler in transaction mode, listening.py). A
process that trusted it would keep every cached copy for ever (they last until a notice drops them), a
revoked key included. So the follower proves delivery with a probe before it tells `resumed`, and again
every `probe_every_s` while it listens. A probe that does not come back within `probe_timeout_s` counts
as a lost connection (`interrupted`: the caches fall back to their TTLs), with an error that says why,
and the follower tries again after `undelivered_retry_s`. Set NEXUS_CHANGE_NOTICES=off behind such a pooler to stop trying.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from adapters.postgres.listening import DeliveryProbes, is_probe, listening
from application.ports import ChangeListener, ChangeNotice, ChangeNotices

log = logging.getLogger(__name__)

CHANNEL = "nexus_changes"


class NoticesUndelivered(Exception):
    """A probe sent on the channel did not come back on the listening connection."""


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
    def __init__(self, url: str, *, reconnect_after_s: float = 1.0, probe_url: str | None = None,
                 probe_timeout_s: float = 5.0, probe_every_s: float = 30.0, undelivered_retry_s: float = 30.0) -> None:
        self._url = url
        self._reconnect_after_s = reconnect_after_s
        self.probes = DeliveryProbes(CHANNEL, probe_url or url, timeout_s=probe_timeout_s, every_s=probe_every_s)
        self._undelivered_retry_s = undelivered_retry_s

    async def follow(self, listener: ChangeListener, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                pause = self._reconnect_after_s
                try:
                    await self._listen(listener, stop)
                except NoticesUndelivered as exc:
                    listener.interrupted()
                    log.error("change notices do not reach this process (%s): is a pooler in transaction mode"
                              " between it and PostgreSQL? What it caches expires after its TTL; trying again in"
                              " %.0f s (NEXUS_CHANGE_NOTICES=off stops trying)", exc, self._undelivered_retry_s)
                    pause = self._undelivered_retry_s
                except Exception as exc:  # a lost connection, mostly: never let the follower die
                    listener.interrupted()
                    log.warning("change notices interrupted (%s); what is cached is read again once they resume",
                                exc)
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                except TimeoutError:
                    pass
        finally:
            listener.interrupted()  # nobody listens any more

    async def _listen(self, listener: ChangeListener, stop: asyncio.Event) -> None:
        # a server lost without a word is noticed in about 15 s (listening.py), and the reconnection forgets
        # everything
        loop = asyncio.get_running_loop()
        probes = self.probes
        async with listening(self._url, CHANNEL) as conn:
            probes.restart()
            await probes.send_when_due(loop.time())
            trusted = False
            while not stop.is_set():
                async for notify in conn.notifies(timeout=0.5):  # returns at the timeout, to look at `stop`
                    if is_probe(notify.payload):
                        if probes.came_back(notify.payload, loop.time()) and not trusted:
                            trusted = True  # the first: delivery is proven
                            listener.resumed()  # changes committed before the LISTEN were not announced
                        continue
                    try:
                        notice = parse_notice(notify.payload)
                    except ValueError as exc:  # something changed, and we cannot tell what: start afresh
                        log.warning("%s", exc)
                        listener.resumed()
                        continue
                    listener.changed(notice)
                now = loop.time()
                if probes.late(now):
                    raise NoticesUndelivered(f"a probe sent {probes.timeout_s:.0f} s ago has not come back")
                await probes.send_when_due(now)
