"""Audit index: where each event sits in the ledger, each stream's listing, signing-key rotations.

Read model:
- audit_entries: event id -> position, stream id and version, type, time (one row per event), so an
  auditor's "prove this event" starts from an id, and a stream lists in version order;
- audit_type_counts: events per tenant and type (additive);
- audit_key_rotations: the SigningKeyRotated events. Signed checkpoints themselves are rows of
  ledger.checkpoints, not events; the keys that signed them are what the ledger records as events.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, DateTime, Index, MetaData, Table, Text, select
from sqlalchemy.dialects.postgresql import UUID

from domain.ledger import RecordedEvent
from projections import bulk
from projections.base import Projection, on, on_every_event

METADATA = MetaData()
entries = Table(
    "audit_entries",
    METADATA,
    Column("position", BigInteger, primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("tenant_id", Text, nullable=False),
    Column("stream_id", Text, nullable=False),
    Column("stream_version", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("audit_entries_stream", "tenant_id", "stream_id", "stream_version", unique=True),
)
type_counts = Table(
    "audit_type_counts",
    METADATA,
    Column("tenant_id", Text, primary_key=True),
    Column("type", Text, primary_key=True),
    Column("events", BigInteger, nullable=False),
)
key_rotations = Table(
    "audit_key_rotations",
    METADATA,
    Column("position", BigInteger, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("previous_key_id", Text),
    Column("algorithm", Text, nullable=False),
    Column("public_key_hex", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)


@dataclass
class AuditBatch:
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    rotations: list[tuple[Any, ...]] = field(default_factory=list)


class AuditIndex(Projection[AuditBatch]):
    name = "audit_index"
    version = 1
    metadata = METADATA

    def new_batch(self) -> AuditBatch:
        return AuditBatch()

    @on_every_event
    def indexed(self, batch: AuditBatch, event: RecordedEvent) -> None:
        batch.entries.append(
            (event.position, event.event_id, event.tenant_id, event.stream_id, event.stream_version, event.type,
             dt.datetime.fromisoformat(event.recorded_at))
        )
        batch.counts[(event.tenant_id, event.type)] += 1

    @on("SigningKeyRotated")
    def key_rotated(self, batch: AuditBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        batch.rotations.append(
            (event.position, event.tenant_id, p["key_id"], p.get("previous_key_id"), p["algorithm"],
             p["public_key"], dt.datetime.fromisoformat(event.recorded_at))
        )

    def flush(self, conn: Connection, batch: AuditBatch) -> None:
        bulk.write(conn, entries, batch.entries)
        bulk.write(conn, type_counts, [(*key, n) for key, n in batch.counts.items()], {"events": bulk.add})
        bulk.write(conn, key_rotations, batch.rotations)

    def report(self, conn: Connection) -> list[dict[str, Any]]:
        stmt = select(type_counts).order_by(type_counts.c.tenant_id, type_counts.c.type)
        return [dict(row) for row in conn.execute(stmt).mappings()]


def create(**params: str) -> AuditIndex:
    if params:
        raise TypeError(f"the audit_index projection takes no parameters, got {sorted(params)}")
    return AuditIndex()


# --- queries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexedEvent:
    position: int
    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    type: str
    recorded_at: dt.datetime


@dataclass(frozen=True)
class KeyRotation:
    position: int
    key_id: str
    previous_key_id: str | None
    algorithm: str
    public_key_hex: str
    recorded_at: dt.datetime


_INDEXED = (entries.c.position, entries.c.event_id, entries.c.stream_id, entries.c.stream_version, entries.c.type,
            entries.c.recorded_at)


def locate(conn: Connection, tenant: str, event_id: uuid.UUID) -> IndexedEvent | None:
    """Where one of the tenant's events sits in the ledger (None if it is not the tenant's or not there)."""
    row = conn.execute(
        select(*_INDEXED).where(entries.c.tenant_id == tenant, entries.c.event_id == event_id)
    ).one_or_none()
    return IndexedEvent(*row) if row else None


def stream(
    conn: Connection, tenant: str, stream_id: str, from_version: int = 1, limit: int = 1000
) -> list[IndexedEvent]:
    """One of the tenant's streams in version order: (version, position, ...) for proofs and exports."""
    rows = conn.execute(
        select(*_INDEXED)
        .where(entries.c.tenant_id == tenant, entries.c.stream_id == stream_id, entries.c.stream_version >= from_version)
        .order_by(entries.c.stream_version)
        .limit(limit)
    )
    return [IndexedEvent(*row) for row in rows]


def counts(conn: Connection, tenant: str) -> dict[str, int]:
    """The tenant's events per type."""
    rows = conn.execute(select(type_counts.c.type, type_counts.c.events).where(type_counts.c.tenant_id == tenant))
    return {type_: int(n) for type_, n in rows}


def rotations(conn: Connection, tenant: str = "_system") -> list[KeyRotation]:
    """Signing-key rotations recorded under a tenant (the signer records them as `_system`)."""
    rows = conn.execute(
        select(key_rotations.c.position, key_rotations.c.key_id, key_rotations.c.previous_key_id,
               key_rotations.c.algorithm, key_rotations.c.public_key_hex, key_rotations.c.recorded_at)
        .where(key_rotations.c.tenant_id == tenant)
        .order_by(key_rotations.c.position)
    )
    return [KeyRotation(*row) for row in rows]
