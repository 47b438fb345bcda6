"""Live ledger events from NATS JetStream.

`tail`: one ephemeral ordered consumer per subscription. Stream sequence == ledger position
(docs/events.md), so resuming is starting the consumer at the client's last position + 1; the ordered
consumer re-creates itself on any gap, and positions at or below the last one delivered are dropped,
so a subscriber sees no gap and no duplicate.

`follow`: live views that do not resume (the inference log, metrics) share ONE consumer per tenant and
category in this process, fanned out to each follower's queue: a hundred dashboards of one tenant cost
one NATS consumer and one decode per event, not a hundred (measured: ops/bench/graphql.py).
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
        self._hubs: dict[tuple[asyncio.AbstractEventLoop, str, str], _Hub] = {}

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

    async def follow(self, tenant_id: str, category: str, from_position: int) -> AsyncIterator[RecordedEvent]:
        # A generator: the hub is found (or started) on the event loop, when the subscription starts.
        key = (asyncio.get_running_loop(), tenant_id, category)
        hub = self._hubs.get(key)
        if hub is None or hub.done:
            hub = self._hubs[key] = _Hub(self.tail(tenant_id, category, None, from_position),
                                         lambda: self._hubs.pop(key, None))
        async for event in hub.follower(from_position):
            yield event

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed and self._loop is asyncio.get_running_loop():
            await self._nc.close()


FOLLOWER_BACKLOG = 10_000  # events a follower may fall behind before it is cut off (it must not hold the others)


class _Hub:
    """One upstream feed, each event handed to every follower's queue; it stops when the last one leaves."""

    def __init__(self, upstream: AsyncIterator[RecordedEvent], on_stop: Callable[[], object]) -> None:
        self._queues: set[asyncio.Queue[RecordedEvent | BaseException]] = set()
        self._on_stop = on_stop
        self.done = False
        self._task = asyncio.ensure_future(self._pump(upstream))

    async def _pump(self, upstream: AsyncIterator[RecordedEvent]) -> None:
        try:
            async for event in upstream:
                for queue in list(self._queues):
                    try:
                        queue.put_nowait(event)
                    except asyncio.QueueFull:
                        self._queues.discard(queue)
                        queue.get_nowait()  # room for the reason it was cut off
                        queue.put_nowait(Unavailable(f"this subscription fell {FOLLOWER_BACKLOG} events behind"))
            failure: BaseException = Unavailable("the event feed ended")
        except Exception as exc:  # the followers raise it (e.g. Unavailable: no stream yet)
            failure = exc
        self._stop()
        for queue in self._queues:
            queue.put_nowait(failure)

    def _stop(self) -> None:
        if not self.done:
            self.done = True
            self._on_stop()

    async def follower(self, from_position: int) -> AsyncIterator[RecordedEvent]:
        queue: asyncio.Queue[RecordedEvent | BaseException] = asyncio.Queue(FOLLOWER_BACKLOG)
        self._queues.add(queue)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.position >= from_position:
                    yield item
        finally:
            self._queues.discard(queue)
            if not self._queues:
                self._stop()
                self._task.cancel()
