"""The inference log: one row per inference (its outcome), for the console's log, filters and run graphs.

Read model:
- inference_log: one row per InferenceCompleted / InferenceFailed, keyed by (tenant, position), with
  the facts the events carry (provider, model, deployment, region, tokens, cost in micro-units with
  its currency and price-table version, latency and time to first token in microseconds, error
  reason) and the links between events: run id (the correlation id: a NEXUS run's id, else the
  request's), the inference's cause (the causation id of its InferenceRequested: the run event
  that asked for it, or the client's X-Causation-Id) and the InferenceRequested's event id.
  Indexed for the console: newest first per tenant, and by model, provider, status, run, time and
  inference id, each within a tenant, so every page is an index range scan whatever the log's size.
- inference_pending: InferenceRequested events whose outcome is not applied yet (the in-flight ones,
  and those of the current batch's edge). An outcome takes its cause from here and deletes the row,
  so the table holds only what is in flight.

The live subscription (application/graph_queries.live_inferences) builds the same record from the
same event with `record()`, so a row read from the table and one delivered live cannot differ.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    MetaData,
    Table,
    Text,
    delete,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import UUID

from domain.ledger import RecordedEvent
from projections import bulk
from projections.base import Projection, on

COMPLETED, FAILED = "completed", "failed"

METADATA = MetaData()
log = Table(
    "inference_log",
    METADATA,
    Column("tenant_id", Text, primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("inference_id", Text, nullable=False),  # the request id: stream inference-<id>
    Column("status", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("deployment", Text, nullable=False),
    Column("region", Text, nullable=False),
    Column("kind", Text),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("tokens_cached", BigInteger, nullable=False),
    Column("tokens_reasoning", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("currency", Text),  # failures cost nothing and have no price
    Column("price_version", Text),
    Column("latency_us", BigInteger, nullable=False),
    Column("ttft_us", BigInteger),
    Column("run_id", Text),
    Column("causation_id", Text),
    Column("requested_event_id", Text),
    Column("error_reason", Text),
    Column("error_detail", Text),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # Pages go newest first (position DESC) within one tenant; each filter has its own range.
    Index("inference_log_id", "tenant_id", "inference_id"),
    Index("inference_log_model", "tenant_id", "model", "position"),
    Index("inference_log_provider", "tenant_id", "provider", "position"),
    Index("inference_log_status", "tenant_id", "status", "position"),
    Index("inference_log_run", "tenant_id", "run_id", "position"),
    Index("inference_log_time", "tenant_id", "recorded_at"),
)
pending = Table(
    "inference_pending",
    METADATA,
    Column("tenant_id", Text, primary_key=True),
    Column("inference_id", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("causation_id", Text),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

_CAUSE = [c.name for c in log.columns].index("causation_id")


@dataclass(frozen=True)
class InferenceRecord:
    """One inference as the log shows it (a row of inference_log, or the same built from a live event)."""

    tenant_id: str
    position: int
    event_id: uuid.UUID
    inference_id: str
    status: str
    provider: str
    model: str
    deployment: str
    region: str
    kind: str | None
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    tokens_reasoning: int
    cost_micros: int
    currency: str | None
    price_version: str | None
    latency_us: int
    ttft_us: int | None
    run_id: str | None
    causation_id: str | None
    requested_event_id: str | None
    error_reason: str | None
    error_detail: str | None
    recorded_at: dt.datetime


def record(event: RecordedEvent, p: dict[str, Any], cause: str | None = None) -> InferenceRecord:
    """The log's record of an outcome event; `cause` is its InferenceRequested's causation id, if known."""
    meta = orjson.loads(event.metadata) if event.metadata else {}
    done = event.type == "InferenceCompleted"
    return InferenceRecord(
        tenant_id=event.tenant_id, position=event.position, event_id=event.event_id,
        inference_id=p["request_id"], status=COMPLETED if done else FAILED, provider=p["provider"],
        model=p["model"], deployment=p["deployment"], region=p["region"], kind=p.get("kind"),
        tokens_in=p.get("tokens_in", 0), tokens_out=p.get("tokens_out", 0), tokens_cached=p.get("tokens_cached", 0),
        tokens_reasoning=p.get("tokens_reasoning", 0), cost_micros=p.get("cost_micros", 0),
        currency=p.get("currency"), price_version=p.get("price_table_version"), latency_us=p["latency_us"],
        ttft_us=p.get("ttft_us"), run_id=meta.get("correlation_id"), causation_id=cause,
        requested_event_id=meta.get("causation_id"), error_reason=None if done else p.get("reason"),
        error_detail=None if done else p.get("detail"), recorded_at=dt.datetime.fromisoformat(event.recorded_at),
    )


def requested_cause(event: RecordedEvent) -> str | None:
    """The causation id of an InferenceRequested: what asked for the inference."""
    return (orjson.loads(event.metadata) if event.metadata else {}).get("causation_id")


@dataclass
class LogBatch:
    rows: list[list[Any]] = field(default_factory=list)  # inference_log column order
    unresolved: int = 0  # rows whose cause is in inference_pending (an earlier batch)
    requested: dict[tuple[str, str], tuple[str, str | None, dt.datetime]] = field(default_factory=dict)


class InferenceLog(Projection[LogBatch]):
    name = "inference_log"
    version = 1
    metadata = METADATA

    def new_batch(self) -> LogBatch:
        return LogBatch()

    @on("InferenceRequested")
    def requested(self, batch: LogBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        batch.requested[(event.tenant_id, p["request_id"])] = (
            str(event.event_id), requested_cause(event), dt.datetime.fromisoformat(event.recorded_at))

    @on("InferenceCompleted")
    def completed(self, batch: LogBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        self._outcome(batch, event, p)

    @on("InferenceFailed")
    def failed(self, batch: LogBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        self._outcome(batch, event, p)

    @staticmethod
    def _outcome(batch: LogBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        opened = batch.requested.pop((event.tenant_id, p["request_id"]), None)
        if opened is None:
            batch.unresolved += 1
        rec = record(event, p, opened[1] if opened else None)
        batch.rows.append([getattr(rec, c.name) for c in log.columns])

    def flush(self, conn: Connection, batch: LogBatch) -> None:
        bulk.write(conn, pending, [(t, rid, *rest) for (t, rid), rest in batch.requested.items()])
        if not batch.rows:
            return
        if not batch.unresolved:
            bulk.write(conn, log, batch.rows)
            return
        with bulk.staged(conn, log, batch.rows) as stage:
            # Outcomes whose InferenceRequested was applied in an earlier batch take its cause from
            # inference_pending, and the pending row goes: the outcome closed it.
            bulk.merge_into(conn, log, "with their causes", lambda: _with_causes(stage))
            bulk.execute_once_compiled(conn, ("close pending", stage.name), lambda: _closing(stage))

    def report(self, conn: Connection) -> list[dict[str, Any]]:
        stmt = (select(log.c.tenant_id, log.c.status, func.count().label("inferences"))
                .group_by(log.c.tenant_id, log.c.status).order_by(log.c.tenant_id, log.c.status))
        return [dict(row) for row in conn.execute(stmt).mappings()]


def _with_causes(stage: Table) -> Any:
    joined = stage.outerjoin(pending, (pending.c.tenant_id == stage.c.tenant_id)
                             & (pending.c.inference_id == stage.c.inference_id))
    columns = list(stage.columns)
    columns[_CAUSE] = func.coalesce(stage.c.causation_id, pending.c.causation_id)
    return select(*columns).select_from(joined)


def _closing(stage: Table) -> Any:
    return delete(pending).where(pending.c.tenant_id == stage.c.tenant_id, pending.c.inference_id == stage.c.inference_id)


def create(**params: str) -> InferenceLog:
    if params:
        raise TypeError(f"the inference_log projection takes no parameters, got {sorted(params)}")
    return InferenceLog()


# --- queries: always within one tenant, newest first ------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    model: str | None = None
    provider: str | None = None
    status: str | None = None
    since: dt.datetime | None = None  # inclusive
    until: dt.datetime | None = None  # exclusive
    run_id: str | None = None

    def matches(self, r: InferenceRecord) -> bool:
        """The same filter applied to a record in memory (the live log)."""
        return ((self.model is None or r.model == self.model) and (self.provider is None or r.provider == self.provider)
                and (self.status is None or r.status == self.status) and (self.run_id is None or r.run_id == self.run_id)
                and (self.since is None or r.recorded_at >= self.since)
                and (self.until is None or r.recorded_at < self.until))


ALL = LogFilter()


def _conditions(tenant: str, f: LogFilter) -> list[Any]:
    found = [log.c.tenant_id == tenant]
    for name in ("model", "provider", "status", "run_id"):
        value = getattr(f, name)
        if value is not None:
            found.append(log.c[name] == value)
    if f.since is not None:
        found.append(log.c.recorded_at >= f.since)
    if f.until is not None:
        found.append(log.c.recorded_at < f.until)
    return found


def page(conn: Connection, tenant: str, first: int, before_position: int | None = None,
         f: LogFilter = ALL) -> tuple[list[InferenceRecord], bool]:
    """Up to `first` of the tenant's inferences, newest first, older than `before_position`; and whether more follow."""
    conditions = _conditions(tenant, f)
    if before_position is not None:
        conditions.append(log.c.position < before_position)
    rows = conn.execute(select(log).where(*conditions).order_by(log.c.position.desc()).limit(first + 1)).all()
    return [InferenceRecord(*row) for row in rows[:first]], len(rows) > first


def by_inference_ids(conn: Connection, tenant: str, inference_ids: list[str]) -> dict[str, InferenceRecord]:
    """The tenant's inferences with these ids (others' ids are simply absent)."""
    if not inference_ids:
        return {}
    rows = conn.execute(select(log).where(log.c.tenant_id == tenant, log.c.inference_id.in_(inference_ids)))
    return {row.inference_id: InferenceRecord(*row) for row in rows}

