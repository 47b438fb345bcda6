"""Live metrics: inference records folded into fixed time buckets, emitted at most once a second.

The bucket is chosen by each outcome's recorded_at (UTC, aligned to multiples of the bucket width
since the epoch), so live buckets line up with what the usage read model will hold. Percentiles come
from the same log-spaced histogram as the read model (projections/histogram.py): within one bucket
(about 19 %) below the reported value. An outcome recorded for a bucket that is already closed (a
straggler) is counted in the current one: a live view is about now.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from projections import histogram
from projections.inference_log import FAILED, InferenceRecord

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class MetricsBucket:
    bucket_start: dt.datetime
    inferences: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    cost_micros: int
    tokens_in: int
    tokens_out: int


@dataclass
class Bucket:
    """One bucket being filled (completed outcomes feed the latency histogram)."""

    start: dt.datetime
    inferences: int = 0
    errors: int = 0
    cost_micros: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_max_us: int = 0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, r: InferenceRecord) -> None:
        self.inferences += 1
        if r.status == FAILED:
            self.errors += 1
            return
        self.cost_micros += r.cost_micros
        self.tokens_in += r.tokens_in
        self.tokens_out += r.tokens_out
        self.latency_max_us = max(self.latency_max_us, r.latency_us)
        index = histogram.bucket_of(r.latency_us)
        self.hist[index] = self.hist.get(index, 0) + 1

    def snapshot(self) -> MetricsBucket:
        dense = [self.hist.get(i, 0) for i in range(max(self.hist) + 1)] if self.hist else []

        def ms(q: float) -> float | None:
            us = histogram.percentile(dense, q, self.latency_max_us)
            return None if us is None else us / 1000

        return MetricsBucket(self.start, self.inferences, self.errors, ms(0.50), ms(0.95), ms(0.99), self.cost_micros,
                             self.tokens_in, self.tokens_out)


def bucket_start(moment: dt.datetime, seconds: int) -> dt.datetime:
    offset = int((moment - EPOCH).total_seconds()) // seconds * seconds
    return EPOCH + dt.timedelta(seconds=offset)


async def buckets(records: AsyncIterator[InferenceRecord], seconds: int,
                  min_interval_s: float = 1.0) -> AsyncIterator[MetricsBucket]:
    """The live bucket after each change, at most once per `min_interval_s`; a bucket's final state
    is emitted once it closes (before the next bucket's)."""
    current: Bucket | None = None
    closed: list[Bucket] = []
    changed = asyncio.Event()

    async def fold() -> None:
        nonlocal current
        async for r in records:
            start = bucket_start(r.recorded_at, seconds)
            if current is None or start > current.start:
                if current is not None:
                    closed[:] = [current]  # only the latest closed bucket waits: the view must not lag
                current = Bucket(start)
            current.add(r)
            changed.set()

    reader = asyncio.ensure_future(fold())
    last = float("-inf")
    try:
        while True:
            waiter = asyncio.ensure_future(changed.wait())
            await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not changed.is_set():  # the feed ended (or failed: result() raises it)
                reader.result()
                return
            await asyncio.sleep(max(0.0, last + min_interval_s - time.monotonic()))
            changed.clear()
            if closed:
                emit = closed.pop(0)
                changed.set()  # the current bucket is still due
            else:
                assert current is not None
                emit = current
            last = time.monotonic()
            yield emit.snapshot()
    finally:
        reader.cancel()
