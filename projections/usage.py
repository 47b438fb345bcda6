"""Usage and latency per tenant, provider and model, in minute, hour and day buckets.

Read model: one row per (tenant, granularity, bucket start, provider, model) with requests, errors,
tokens, cost in integer micro-units, the latency sum and maximum, and a latency histogram
(projections/histogram.py). Every column merges by addition (the maximum by greatest), so batches
are flushed as additive upserts and any range's p50/p95/p99 come from adding histograms.
Bucket time is the ledger's recorded_at (UTC). Queries read buckets only, never events: a dashboard
query costs the same at 1M and at 10M events.

Cost here is summed as recorded, assuming one currency per tenant and model; the per-currency money
report is projections/costs.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    MetaData,
    Table,
    Text,
    and_,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from domain.ledger import RecordedEvent
from projections import bulk, histogram
from projections.base import Projection, on

Granularity = Literal["minute", "hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("minute", "hour", "day")
_STEP = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}

METADATA = MetaData()
buckets = Table(
    "usage_buckets",
    METADATA,
    Column("tenant_id", Text, primary_key=True),
    Column("granularity", Text, primary_key=True),
    Column("bucket_start", DateTime(timezone=True), primary_key=True),
    Column("provider", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("requests", BigInteger, nullable=False),  # completed + failed
    Column("errors", BigInteger, nullable=False),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("tokens_cached", BigInteger, nullable=False),
    Column("tokens_reasoning", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("latency_sum_us", BigInteger, nullable=False),  # completed requests only
    Column("latency_max_us", BigInteger, nullable=False),
    Column("latency_hist", ARRAY(BigInteger), nullable=False),  # completed requests only
    # Room on each page, so the additive updates of hour and day rows stay on their page (HOT: no
    # index maintenance). Measured: conflicting upserts about twice as fast.
    postgresql_with={"fillfactor": 80},
)

_ADDITIVE = ("requests", "errors", "tokens_in", "tokens_out", "tokens_cached", "tokens_reasoning", "cost_micros",
             "latency_sum_us")
_MAX = len(_ADDITIVE)  # index of latency_max_us in a totals list
_HIST = _MAX + 1  # index of the histogram: {bucket index: count}, sparse because most buckets are empty


def _new_totals() -> list[Any]:
    """One bucket's deltas: the additive counters in _ADDITIVE order, the latency maximum, a histogram."""
    return [0, 0, 0, 0, 0, 0, 0, 0, 0, {}]


MinuteKey = tuple[str, str, str, str]  # tenant, "YYYY-MM-DDTHH:MM", provider, model


@dataclass
class UsageBatch:
    minutes: dict[MinuteKey, list[Any]] = field(default_factory=dict)

    def totals(self, event: RecordedEvent, payload: dict[str, Any]) -> list[Any]:
        key = (event.tenant_id, event.recorded_at[:16], payload["provider"], payload["model"])
        found = self.minutes.get(key)
        if found is None:
            found = self.minutes[key] = _new_totals()
        return found


class Usage(Projection[UsageBatch]):
    name = "usage"
    version = 1
    metadata = METADATA

    def new_batch(self) -> UsageBatch:
        return UsageBatch()

    @on("InferenceCompleted")
    def completed(self, batch: UsageBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        t = batch.totals(event, p)  # indexes follow _ADDITIVE, then the maximum and the histogram
        latency = p["latency_us"]
        t[0] += 1
        t[2] += p["tokens_in"]
        t[3] += p["tokens_out"]
        t[4] += p["tokens_cached"]
        t[5] += p["tokens_reasoning"]
        t[6] += p["cost_micros"]
        t[7] += latency
        if latency > t[_MAX]:
            t[_MAX] = latency
        hist = t[_HIST]
        bucket = histogram.bucket_of(latency)
        hist[bucket] = hist.get(bucket, 0) + 1

    @on("InferenceFailed")
    def failed(self, batch: UsageBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        t = batch.totals(event, p)
        t[0] += 1
        t[1] += 1

    def flush(self, conn: Connection, batch: UsageBatch) -> None:
        if not batch.minutes:
            return
        starts: dict[str, dt.datetime] = {}
        rows = []
        for (tenant, minute, provider, model), t in batch.minutes.items():
            start = starts.get(minute)
            if start is None:
                start = starts[minute] = _parse_stamp(minute)
            rows.append((tenant, "minute", start, provider, model, *t[:_HIST], histogram.literal(t[_HIST])))
        rows.sort()  # primary-key order: index pages are visited once, in order
        with bulk.staged(conn, buckets, rows) as minutes:
            # The batch's minutes go in as they are; its hours and days are their roll-ups, added up
            # by the database (on the other core) rather than here.
            bulk.merge_into(conn, buckets, "minute", lambda: select(*minutes.columns), _MERGE)
            for granularity in ("hour", "day"):
                bulk.merge_into(conn, buckets, granularity, lambda g=granularity: _rollup(minutes, g), _MERGE)

    def report(self, conn: Connection) -> list[dict[str, Any]]:
        """Totals per tenant, provider and model over everything in this read model (day buckets)."""
        t = buckets
        stmt = (
            select(t.c.tenant_id, t.c.provider, t.c.model, *_sums(t))
            .where(t.c.granularity == "day")
            .group_by(t.c.tenant_id, t.c.provider, t.c.model)
            .order_by(t.c.tenant_id, t.c.provider, t.c.model)
        )
        out = []
        for row in conn.execute(stmt).mappings():
            summary = _bucket(row, None)
            out.append({"tenant_id": row["tenant_id"], "provider": row["provider"], "model": row["model"],
                        **{k: v for k, v in summary.as_dict().items() if k != "start"}})
        return out


def _parse_stamp(stamp: str) -> dt.datetime:
    """'YYYY-MM-DD', 'YYYY-MM-DDTHH' or 'YYYY-MM-DDTHH:MM' (prefixes of recorded_at) as a UTC instant."""
    return dt.datetime(
        int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
        int(stamp[11:13]) if len(stamp) > 10 else 0, int(stamp[14:16]) if len(stamp) > 13 else 0,
        tzinfo=dt.UTC,
    )


def _rollup(minutes: Table, granularity: Granularity) -> Any:
    """Minute rows added up into hour or day rows (UTC: date_trunc in the session's zone would not be)."""
    start = func.date_trunc(granularity, minutes.c.bucket_start, "UTC")
    keys = (minutes.c.tenant_id, minutes.c.provider, minutes.c.model)
    return (
        select(
            minutes.c.tenant_id, literal(granularity), start, minutes.c.provider, minutes.c.model,
            *(func.sum(minutes.c[name]) for name in _ADDITIVE), func.max(minutes.c.latency_max_us),
            func.projections.hist_sum(minutes.c.latency_hist),
        )
        .group_by(*keys, start)
        .order_by(*keys[:1], start, *keys[1:])
    )


_MERGE = {**{name: bulk.add for name in _ADDITIVE}, "latency_max_us": bulk.greatest, "latency_hist": bulk.hist_add}


def create(**params: str) -> Usage:
    if params:
        raise TypeError(f"the usage projection takes no parameters, got {sorted(params)}")
    return Usage()


# --- queries: buckets only, always for one tenant ---------------------------------------------------


@dataclass(frozen=True)
class UsageBucket:
    start: dt.datetime | None
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    tokens_reasoning: int
    cost_micros: int
    latency_mean_us: int | None
    latency_max_us: int | None
    p50_us: int | None
    p95_us: int | None
    p99_us: int | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _sums(t: Table) -> list[Any]:
    return [
        *(func.sum(t.c[name]).label(name) for name in _ADDITIVE),
        func.max(t.c.latency_max_us).label("latency_max_us"),
        func.projections.hist_sum(t.c.latency_hist).label("latency_hist"),
    ]


def _bucket(row: Any, start: dt.datetime | None) -> UsageBucket:
    hist = histogram.dense(row["latency_hist"] or [])
    completed = sum(hist)
    top = row["latency_max_us"]
    top = int(top) if top is not None and completed else None
    return UsageBucket(
        start=start,
        requests=int(row["requests"] or 0),
        errors=int(row["errors"] or 0),
        tokens_in=int(row["tokens_in"] or 0),
        tokens_out=int(row["tokens_out"] or 0),
        tokens_cached=int(row["tokens_cached"] or 0),
        tokens_reasoning=int(row["tokens_reasoning"] or 0),
        cost_micros=int(row["cost_micros"] or 0),
        latency_mean_us=int(row["latency_sum_us"]) // completed if completed else None,
        latency_max_us=top,
        p50_us=histogram.percentile(hist, 0.50, top),
        p95_us=histogram.percentile(hist, 0.95, top),
        p99_us=histogram.percentile(hist, 0.99, top),
    )


def _filters(tenant: str, provider: str | None, model: str | None) -> list[Any]:
    conditions = [buckets.c.tenant_id == tenant]
    if provider is not None:
        conditions.append(buckets.c.provider == provider)
    if model is not None:
        conditions.append(buckets.c.model == model)
    return conditions


def timeseries(
    conn: Connection,
    tenant: str,
    granularity: Granularity,
    start: dt.datetime,
    end: dt.datetime,
    provider: str | None = None,
    model: str | None = None,
) -> list[UsageBucket]:
    """Buckets of one granularity with start <= bucket start < end, providers and models merged unless filtered."""
    if granularity not in _STEP:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    t = buckets
    stmt = (
        select(t.c.bucket_start, *_sums(t))
        .where(*_filters(tenant, provider, model), t.c.granularity == granularity,
               t.c.bucket_start >= start, t.c.bucket_start < end)
        .group_by(t.c.bucket_start)
        .order_by(t.c.bucket_start)
    )
    return [_bucket(row, row["bucket_start"]) for row in conn.execute(stmt).mappings()]


def summary(
    conn: Connection,
    tenant: str,
    start: dt.datetime,
    end: dt.datetime,
    provider: str | None = None,
    model: str | None = None,
) -> UsageBucket:
    """Totals and percentiles over [start, end) at minute resolution, from the fewest buckets that cover it."""
    t = buckets
    pieces = [
        and_(t.c.granularity == g, t.c.bucket_start >= s, t.c.bucket_start < e) for g, s, e in cover(start, end)
    ]
    if not pieces:
        return _bucket({"latency_hist": [], "latency_max_us": None, "latency_sum_us": 0}, start)
    stmt = select(*_sums(t)).where(*_filters(tenant, provider, model), or_(*pieces))
    return _bucket(conn.execute(stmt).mappings().one(), start)


def _floor(moment: dt.datetime, granularity: Granularity) -> dt.datetime:
    moment = moment.astimezone(dt.UTC).replace(second=0, microsecond=0)
    if granularity in ("hour", "day"):
        moment = moment.replace(minute=0)
    if granularity == "day":
        moment = moment.replace(hour=0)
    return moment


def _ceil(moment: dt.datetime, granularity: Granularity) -> dt.datetime:
    floor = _floor(moment, granularity)
    return floor if floor == moment else floor + _STEP[granularity]


def cover(start: dt.datetime, end: dt.datetime) -> list[tuple[Granularity, dt.datetime, dt.datetime]]:
    """Split [start, end), widened to whole minutes, into whole days, then hours, then minutes at the edges."""

    def split(s: dt.datetime, e: dt.datetime, levels: tuple[Granularity, ...]) -> Iterator[tuple[Granularity, dt.datetime, dt.datetime]]:
        if s >= e:
            return
        granularity, finer = levels[0], levels[1:]
        if not finer:
            yield granularity, s, e
            return
        inner_start, inner_end = _ceil(s, granularity), _floor(e, granularity)
        if inner_start >= inner_end:
            yield from split(s, e, finer)
            return
        yield from split(s, inner_start, finer)
        yield granularity, inner_start, inner_end
        yield from split(inner_end, e, finer)

    return list(split(_floor(start, "minute"), _ceil(end, "minute"), ("day", "hour", "minute")))
