"""Builders and fixtures shared by the projection tests (this module holds no tests of its own)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from domain.canonical import canonical_json
from domain.inference import InferenceCompleted, InferenceFailed, inference_stream
from domain.ledger import NewEvent, RecordedEvent
from projections.base import Projection, on
from projections.store import ProjectionStore
from projections.usage import Usage, UsageBatch

if TYPE_CHECKING:
    from tests.conftest import TestDatabase


@pytest.fixture
def store(database: TestDatabase) -> Iterator[ProjectionStore]:
    with ProjectionStore(database.app_url) as opened:
        yield opened


def completed(
    request_id: str | None = None,
    *,
    tenant: str = "acme",
    provider: str = "openai",
    model: str = "gpt-4o",
    tokens_in: int = 100,
    tokens_out: int = 50,
    tokens_cached: int = 0,
    tokens_reasoning: int = 0,
    latency_us: int = 200_000,
    cost_micros: int = 1_500,
    currency: str = "USD",
    price_table: str = "2026-11",
) -> NewEvent:
    rid = request_id or uuid.uuid4().hex[:12]
    fact = InferenceCompleted(rid, provider, model, "default", "eu-west", tokens_in, tokens_out, tokens_cached,
                              tokens_reasoning, latency_us, latency_us // 4, cost_micros, currency, price_table)
    return NewEvent(inference_stream(rid), fact.type, fact.payload(), tenant_id=tenant)


def failed(
    request_id: str | None = None,
    *,
    tenant: str = "acme",
    provider: str = "openai",
    model: str = "gpt-4o",
    reason: str = "timeout",
    latency_us: int = 30_000_000,
) -> NewEvent:
    rid = request_id or uuid.uuid4().hex[:12]
    fact = InferenceFailed(rid, provider, model, "default", "eu-west", reason, "upstream said no", latency_us)
    return NewEvent(inference_stream(rid), fact.type, fact.payload(), tenant_id=tenant)


def recorded(events: Sequence[NewEvent], times: Sequence[dt.datetime], first_position: int = 1) -> list[RecordedEvent]:
    """Events as the ledger would hand them out, at chosen times (the real ledger stamps `now`)."""
    versions: dict[str, int] = {}
    out = []
    for offset, (event, moment) in enumerate(zip(events, times, strict=True)):
        versions[event.stream_id] = versions.get(event.stream_id, 0) + 1
        out.append(
            RecordedEvent(
                position=first_position + offset,
                event_id=event.event_id,
                tenant_id=event.tenant_id,
                stream_id=event.stream_id,
                stream_version=versions[event.stream_id],
                type=event.type,
                schema_version=event.schema_version,
                payload=canonical_json(dict(event.payload)),
                metadata=canonical_json(dict(event.metadata)),
                recorded_at=moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                prev_hash=b"",
                entry_hash=b"",
                chain_hash=b"",
            )
        )
    return out


def rows_of(store: ProjectionStore, projection: Projection[Any], schema: str | None = None) -> dict[str, list[tuple]]:
    """Every row of every read-model table, in primary-key order: the active version, or `schema`."""
    reading = store.model(schema) if schema else store.reading(projection.name)
    with reading as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key.columns))]
            for table in projection.metadata.sorted_tables
        }


def active_schema(store: ProjectionStore, name: str) -> str | None:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT active_schema FROM projections.registry WHERE name = %(n)s", {"n": name}
        ).scalar_one_or_none()


def schemas_named(store: ProjectionStore, prefix: str) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(
            conn.exec_driver_sql(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %(p)s)", {"p": prefix}
            ).scalars()
        )


class Poisoned(Usage):
    """The usage projection with a bug: one request id makes its handler raise."""

    def __init__(self, poison: str) -> None:
        self.poison = poison

    @on("InferenceCompleted")
    def completed(self, batch: UsageBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        if p["request_id"] == self.poison:
            raise ValueError("cannot handle this one")
        super().completed(batch, event, p)


class BrokenFlush(Usage):
    """Writes its rows, then fails: the rows must not survive."""

    def flush(self, conn: Any, batch: UsageBatch) -> None:
        super().flush(conn, batch)
        raise RuntimeError("disk on fire")
