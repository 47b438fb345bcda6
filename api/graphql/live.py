"""Live ledger events from NATS JetStream: one ephemeral ordered consumer per subscription.

Stream sequence == ledger position (docs/events.md), so resuming is starting the consumer at the
client's last position + 1; the ordered consumer re-creates itself on any gap, and positions at or
below the last one delivered are dropped, so a subscriber sees no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from adapters.nats import codec
from adapters.nats.connect import connect
from adapters.nats.relay import StreamNames
from application.graph_queries import EventFeed, Unavailable
from domain.ledger import RecordedEvent


class NatsEventFeed(EventFeed):
    def __init__(self, url: Callable[[], str], names: StreamNames) -> None:
        self._url = url  # resolved on first use: nothing connects at start-up or import
        self._names = names
        self._nc: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def _connection(self) -> Client:
        # One connection per event loop (the server's; in-process callers such as tests run their own).
        # Subscriptions that start together wait for the one connection being made (without the lock
        # each made its own, and all but the last were left unmanaged).
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            if self._nc is None or self._nc.is_closed or self._loop is not loop:
                self._nc, self._loop = await connect(self._url(), "nexus-graphql"), loop
            return self._nc

    def subject(self, tenant_id: str, category: str | None, event_type: str | None) -> str:
        parts = [codec.token(tenant_id), codec.token(category) if category else "*",
                 codec.token(event_type) if event_type else "*"]
        return ".".join([self._names.subject_prefix, *parts])

    async def tail(self, tenant_id: str, category: str | None, event_type: str | None,
                   from_position: int | None) -> AsyncIterator[RecordedEvent]:
        js = (await self._connection()).jetstream()
        if from_position is None:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_position)
        try:
            sub = await js.subscribe(self.subject(tenant_id, category, event_type), stream=self._names.stream,
                                     ordered_consumer=True, config=config, inactive_threshold=30.0)
        except NotFoundError:
            raise Unavailable(f"the event stream {self._names.stream} does not exist yet: is the relay running?") from None
        last = (from_position or 1) - 1
        try:
            async for msg in sub.messages:
                headers = msg.headers or {}
                # The subject token is sanitised; the header holds the exact tenant id.
                if headers.get(codec.H_TENANT) != tenant_id:
                    continue
                event = codec.decode(msg.data, headers)
                if event.position <= last:
                    continue
                if category is not None and codec.category_of(event.stream_id) != category:
                    continue
                if event_type is not None and event.type != event_type:
                    continue
                last = event.position
                yield event
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may be gone already; the server drops the consumer anyway
                pass

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed and self._loop is asyncio.get_running_loop():
            await self._nc.close()
