"""Feeds projections from one durable JetStream consumer, catching up from the ledger when needed.

The read model's checkpoint (written with the view update) is the truth; the consumer only
delivers. On start, and whenever a gap shows up, the projection first catches up from the ledger
in PostgreSQL (fast, and the stream may no longer hold old positions), then the durable consumer is
recreated at checkpoint + 1. Messages are acknowledged (AckAll: the last of a batch) only after the
batch's transaction committed, so a kill between commit and ack causes a redelivery that the
checkpoint skips. A handler error stops the projection loudly (the store records it) until resumed.

Batches, not single events: once caught up, the consumer lets the next batch gather for `linger_s`
(50 ms) before applying it. Under a steady trickle (a gateway at 200 req/s writes 400 events/s) it
would otherwise pay a transaction and a JetStream round trip for every event or two, in every
projection, and an apply costs a few milliseconds of CPU whatever its size. The cost is up to
`linger_s` more lag (docs/projections.md has both sides measured).

A consumer started before the relay has created the stream waits for it rather than failing.

The durable consumer holds nothing that matters (it is recreated at every resync from the checkpoint),
so it is made to expire: JetStream deletes it after `idle_expiry_s` (1 h) without a pull. Durables
that nothing follows any more (a projection renamed or removed, consumers grouped differently after
an upgrade) therefore go away by themselves. And when the one being followed disappears (expired
during a long outage, or deleted by an operator), the consumer recreates it from the checkpoint.
It has to look: a pull on a deleted consumer is a plain timeout to nats-py against NATS 2.9 (so an
idle consumer looks every `presence_check_s`) and a 503 against 2.15.

One consumer may feed several projections (`nexus up` feeds all of them from one): each batch is
fetched and decoded once and applied to all of them in one transaction (`ProjectionStore.apply_many`).
Four consumers of the same stream cost four fetches, four decodes and four commits per batch; one
costs a quarter of that (docs/projections.md, "One consumer for all"). A projection that fails is
stopped and the others go on; once resumed it rejoins through the gap its checkpoint leaves. One whose
code is new (ProjectionOutdated) is rebuilt from the ledger aside, in a task of its own, while the
others go on; once swapped it rejoins the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from adapters.nats import codec
from adapters.nats.cancellation import raise_if_cancelled
from adapters.nats.relay import StreamNames
from application.ports import Ledger
from projections.base import Projection, ProjectionOutdated
from projections.rebuild import RebuildRunning
from projections.store import ProjectionFailed, ProjectionGap, ProjectionStopped, ProjectionStore

log = logging.getLogger(__name__)

STREAM_NOT_FOUND = 10059  # JetStream API error code


class StreamNotFound(Exception):
    """The JetStream stream is not there (yet): the relay creates it on its first start."""


class ConsumerLost(Exception):
    """The durable consumer being followed is gone: expired, or deleted by someone else."""


class _Rejoin(Exception):
    """A projection's rebuild ended: follow again with it among the others."""


class ProjectionConsumer:
    def __init__(
        self,
        projections: Projection[Any] | Sequence[Projection[Any]],
        store: ProjectionStore,
        ledger: Ledger,
        js: JetStreamContext,
        names: StreamNames = StreamNames(),
        batch: int = 1000,
        linger_s: float = 0.05,
        idle_expiry_s: float = 3600.0,
        presence_check_s: float = 5.0,
    ) -> None:
        self.projections = [projections] if isinstance(projections, Projection) else list(projections)
        self.name = "+".join(p.name for p in self.projections)  # for the logs
        self._store = store
        self._ledger = ledger
        self._js = js
        self._names = names
        self._batch = batch
        self.durable = "nexus_proj_" + "-".join(p.name for p in self.projections)
        self.checkpoint = 0
        self.linger_s = linger_s
        self.stream_wait_s = 0.25  # between looks for a stream the relay has not created yet
        self.idle_expiry_s = idle_expiry_s
        self.presence_check_s = presence_check_s
        self._seen_at = 0.0  # when the durable consumer was last known to exist
        self._rebuilds: dict[str, asyncio.Task[None]] = {}  # outdated projections, rebuilt aside
        self._rejoin = False  # a rebuild ended: resync with the rebuilt projection back in
        self.rebuild_retry_s = 2.0  # after a rebuild that failed

    def _active(self) -> list[Projection[Any]]:
        """The projections fed now: all but those being rebuilt."""
        return [p for p in self.projections if p.name not in self._rebuilds]

    async def resync(self) -> None:
        """Catch up from the ledger, then point the durable consumer at checkpoint + 1."""
        self.checkpoint = await asyncio.to_thread(self._store.catch_up_from_ledger, self._active(), self._ledger)
        try:
            await self._js.delete_consumer(self._names.stream, self.durable)
        except NotFoundError:  # no such consumer, or no such stream (add_consumer tells which)
            pass
        try:
            await self._add_consumer()
        except NotFoundError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise StreamNotFound(self._names.stream) from None
            raise

    async def _add_consumer(self) -> None:
        await self._js.add_consumer(
            self._names.stream,
            ConsumerConfig(
                durable_name=self.durable,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.checkpoint + 1,
                ack_policy=AckPolicy.ALL,
                ack_wait=30.0,
                max_ack_pending=100_000,
                filter_subject=f"{self._names.subject_prefix}.>",
                inactive_threshold=self.idle_expiry_s,
            ),
        )
        self._seen_at = time.monotonic()

    async def _check_present(self) -> None:
        """ConsumerLost if the durable consumer is gone; looks at most every `presence_check_s`."""
        if time.monotonic() - self._seen_at < self.presence_check_s:
            return
        try:
            await self._js.consumer_info(self._names.stream, self.durable)
        except NotFoundError:  # the consumer, or its whole stream
            raise ConsumerLost(self.durable) from None
        except (nats.errors.Error, TimeoutError):  # NATS unreachable: nothing is known; look again later
            return
        self._seen_at = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        waited = False  # for the stream: said once, not at every look
        while not stop.is_set():
            raise_if_cancelled()
            if not self._active():  # every one is being rebuilt
                await self._wait_for_rejoin(stop)
            self._rejoin = False
            if stop.is_set() or not self._active():
                continue
            try:
                await self._follow(stop)
            except StreamNotFound:
                (log.debug if waited else log.warning)(
                    "projection %s: stream %s does not exist yet (the relay creates it); waiting",
                    self.name, self._names.stream)
                waited = True
                try:
                    await asyncio.wait_for(stop.wait(), self.stream_wait_s)
                except TimeoutError:
                    pass
            except ProjectionGap as gap:
                log.warning("projection %s: %s; catching up from the ledger", self.name, gap)
            except ConsumerLost:
                log.warning("projection %s: its durable consumer %s is gone (expired or deleted); recreating it"
                            " from the checkpoint", self.name, self.durable)
            except (ProjectionFailed, ProjectionStopped) as exc:
                log.error("projection %s stopped: %s", exc.name, exc)
                await self._wait_until_resumed(stop)  # at once while another in the group still runs
            except ProjectionOutdated as exc:
                # New projection code was deployed: build its read model from the ledger, then swap.
                # Aside, so that the others in the group go on meanwhile; it rejoins once swapped.
                log.warning("projection %s: %s; rebuilding from the ledger", exc.name, exc)
                self._start_rebuild(next(p for p in self.projections if p.name == exc.name))
            except _Rejoin:
                log.info("projection %s: a rebuild ended; following again with every projection", self.name)
        for task in list(self._rebuilds.values()):  # as before: stopping waits for a rebuild under way
            await task

    def _start_rebuild(self, outdated: Projection[Any]) -> None:
        if outdated.name not in self._rebuilds:
            self._rebuilds[outdated.name] = asyncio.create_task(self._rebuild(outdated))

    async def _rebuild(self, outdated: Projection[Any]) -> None:
        try:
            await asyncio.to_thread(self._store.rebuild, outdated, self._ledger)
        except RebuildRunning:  # another process is rebuilding it: wait for that one
            await asyncio.sleep(1.0)
        except Exception:  # the old version keeps serving (the store recorded why); try again
            log.exception("projection %s: rebuild failed; trying again in %.0f s", outdated.name, self.rebuild_retry_s)
            await asyncio.sleep(self.rebuild_retry_s)
        finally:
            del self._rebuilds[outdated.name]
            self._rejoin = True

    async def _wait_for_rejoin(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self._rejoin:
            raise_if_cancelled()
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass

    async def _follow(self, stop: asyncio.Event) -> None:
        await self.resync()
        sub = await self._js.pull_subscribe_bind(self.durable, self._names.stream)
        try:
            while not stop.is_set():
                raise_if_cancelled()
                if self._rejoin:
                    raise _Rejoin()
                started = time.monotonic()
                try:
                    # Returns what is there at once; when nothing is, waits for a first message and
                    # then for more until linger_s has passed or the batch is full.
                    messages = await sub.fetch(self._batch, timeout=self.linger_s)
                except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when idle
                    await self._check_present()
                    continue
                except APIError as exc:  # a pull on a deleted consumer, as newer servers answer it (503)
                    log.debug("projection %s: pull refused (%s); is the consumer still there?", self.name, exc)
                    self._seen_at = 0.0
                    await self._check_present()
                    await asyncio.sleep(0.1)  # it is: a passing refusal
                    continue
                if not messages:  # nats-py returns nothing while the connection is down
                    await asyncio.sleep(0.1)
                    continue
                self._seen_at = time.monotonic()
                events = [codec.decode(m.data, dict(m.headers or {})) for m in messages]
                checkpoints = await asyncio.to_thread(self._store.apply_many, self._active(), events)
                self.checkpoint = min(checkpoints.values())
                await messages[-1].ack()  # AckAll: only after the view update and checkpoint committed
                if len(messages) < self._batch:  # caught up: let the next batch gather
                    rest = self.linger_s - (time.monotonic() - started)
                    if rest > 0:
                        try:
                            await asyncio.wait_for(stop.wait(), rest)
                        except TimeoutError:
                            pass
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may already be gone; nothing to clean up then
                pass

    async def _wait_until_resumed(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self._rejoin:
            raise_if_cancelled()
            active = self._active()
            status = await asyncio.to_thread(self._store.status, active) if active else []
            if not all(s.stopped for s in status):
                return
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
