"""The relay: the ledger is the outbox; every position goes to JetStream once, in order.

Stream sequence == ledger position. Each message is published with Nats-Msg-Id = event id (a
duplicate is acknowledged as such) and Nats-Expected-Last-Sequence = position - 1, so the server
itself refuses a gap or a reordering. On start, and after any refusal, the relay asks the stream
for its last sequence and resumes at the next position: a relay killed anywhere loses and doubles
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from adapters.nats import codec
from adapters.nats.cancellation import raise_if_cancelled
from application.ports import Ledger

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071


class StreamBelongsToAnotherLedger(RuntimeError):
    pass


@dataclass(frozen=True)
class StreamNames:
    stream: str = "NEXUS_EVENTS"
    subject_prefix: str = "nexus.events"


async def ensure_stream(js: JetStreamContext, names: StreamNames, ledger_id: str) -> int:
    """Create the stream if absent; returns its last sequence. Refuses a stream of another ledger."""
    description = f"NexusAI ledger {ledger_id}"
    try:
        info = await js.stream_info(names.stream)
    except NotFoundError:
        info = await js.add_stream(
            StreamConfig(
                name=names.stream,
                description=description,
                subjects=[f"{names.subject_prefix}.>"],
                storage=StorageType.FILE,
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.OLD,
                deny_delete=True,
                deny_purge=True,
                duplicate_window=120.0,
            )
        )
    if info.config.description != description:
        raise StreamBelongsToAnotherLedger(
            f"stream {names.stream} carries {info.config.description!r}, this is ledger {ledger_id}"
        )
    return info.state.last_seq


class Relay:
    def __init__(
        self,
        ledger: Ledger,
        js: JetStreamContext,
        names: StreamNames = StreamNames(),
        batch: int = 2000,
        poll_interval: float = 0.01,
        idle_poll_interval: float = 0.025,
        idle_after_s: float = 1.0,
    ) -> None:
        self._ledger = ledger
        self._js = js
        self._nc = js._nc  # the same connection, for publishes that need no ack of their own
        self._names = names
        self._batch = batch
        self._poll = poll_interval
        # Each poll is a read through the thread pool, and polls are a fixed cost whatever the
        # traffic: every 5 ms they took about 0.1 of a core even with the ledger idle. So the relay
        # polls every 10 ms (at 400 events/s that cut the workers' CPU from 333-363 to 258-300 ms/s
        # and did not lengthen the projections' lag, which their 50 ms linger dominates), and after
        # `idle_after_s` with nothing new every 25 ms (ops/bench/workers.py measures both).
        self._idle_poll = idle_poll_interval
        self._idle_after = idle_after_s
        self._ledger_id = ledger.genesis().ledger_id
        self.next_position = 1
        self.published = 0
        self.ack_timeout = 10.0

    async def start(self) -> None:
        self.next_position = await ensure_stream(self._js, self._names, self._ledger_id) + 1

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while not stop.is_set():
            raise_if_cancelled()
            try:
                sent = await self.step()
            except Exception as exc:  # NATS or Postgres away: back off, then re-sync from the stream
                log.warning("relay paused: %s", exc)
                await asyncio.sleep(0.5)
                try:
                    await self.start()
                except Exception as again:
                    log.warning("relay cannot re-sync yet: %s", again)
                continue
            now = loop.time()
            if sent:
                last_sent = now
                continue
            await asyncio.sleep(self._idle_poll if now - last_sent > self._idle_after else self._poll)

    async def step(self) -> int:
        """Publish the next batch of the ledger tail; returns how many positions it advanced.

        Every message but the last goes out without asking for an ack; the last one asks. Because
        each message carries Nats-Expected-Last-Sequence, the server stores message k only if k-1 is
        stored, so an ack for the last message proves the whole batch landed in order (a duplicate
        counts: that position was stored by an earlier attempt). Any refusal means: re-sync.
        """
        events = await asyncio.to_thread(self._ledger.read, self.next_position, self._batch)
        if not events:
            return 0
        nc = self._nc
        prefix = self._names.subject_prefix
        for event in events[:-1]:
            body, headers = codec.encode(self._ledger_id, event)
            await nc.publish(codec.subject_for(prefix, event), body, headers=headers)
        last = events[-1]
        body, headers = codec.encode(self._ledger_id, last)
        try:
            ack = await self._js.publish(codec.subject_for(prefix, last), body, timeout=self.ack_timeout, headers=headers)
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            # Part of the batch did not land (or someone else got further): continue from the stream.
            before = self.next_position
            self.next_position = (await self._js.stream_info(self._names.stream)).state.last_seq + 1
            return self.next_position - before
        if ack.seq != last.position:
            raise RuntimeError(f"stream sequence {ack.seq} != ledger position {last.position}")
        advanced = last.position + 1 - self.next_position
        self.next_position = last.position + 1
        self.published += advanced
        return advanced
