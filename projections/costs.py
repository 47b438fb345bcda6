"""Cost report per tenant, model and day, kept apart per currency and price-table version.

Read model: one row per (tenant, UTC day of recorded_at, provider, model, currency, price-table
version) with requests, tokens and cost in integer micro-units, exactly as the InferenceCompleted
events recorded them (projections never re-price; projections/repricing.py is the what-if).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Date, MetaData, Table, Text, func, select

from domain.ledger import RecordedEvent
from projections import bulk
from projections.base import Projection, on

METADATA = MetaData()
daily = Table(
    "cost_daily",
    METADATA,
    Column("tenant_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("provider", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("currency", Text, primary_key=True),
    Column("price_table_version", Text, primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("tokens_cached", BigInteger, nullable=False),
    Column("tokens_reasoning", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
)

_ADDITIVE = ("requests", "tokens_in", "tokens_out", "tokens_cached", "tokens_reasoning", "cost_micros")

CostKey = tuple[str, str, str, str, str, str]  # tenant, "YYYY-MM-DD", provider, model, currency, price table


@dataclass
class CostBatch:
    days: dict[CostKey, list[int]] = field(default_factory=dict)  # values in _ADDITIVE order


class Costs(Projection[CostBatch]):
    name = "costs"
    version = 1
    metadata = METADATA

    def new_batch(self) -> CostBatch:
        return CostBatch()

    @on("InferenceCompleted")
    def completed(self, batch: CostBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        key = (event.tenant_id, event.recorded_at[:10], p["provider"], p["model"], p["currency"],
               p["price_table_version"])
        sums = batch.days.get(key)
        if sums is None:
            sums = batch.days[key] = [0] * len(_ADDITIVE)
        sums[0] += 1
        sums[1] += p["tokens_in"]
        sums[2] += p["tokens_out"]
        sums[3] += p["tokens_cached"]
        sums[4] += p["tokens_reasoning"]
        sums[5] += p["cost_micros"]

    def flush(self, conn: Connection, batch: CostBatch) -> None:
        if not batch.days:
            return
        rows = [
            (tenant, dt.date.fromisoformat(day), provider, model, currency, table, *sums)
            for (tenant, day, provider, model, currency, table), sums in batch.days.items()
        ]
        bulk.write(conn, daily, rows, _MERGE)

    def report(self, conn: Connection) -> list[dict[str, Any]]:
        stmt = select(daily).order_by(*daily.primary_key.columns)
        return [dict(row) for row in conn.execute(stmt).mappings()]


_MERGE = {name: bulk.add for name in _ADDITIVE}


def create(**params: str) -> Costs:
    if params:
        raise TypeError(f"the costs projection takes no parameters, got {sorted(params)}")
    return Costs()


# --- queries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostLine:
    day: dt.date
    provider: str
    model: str
    currency: str
    price_table_version: str
    requests: int
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    tokens_reasoning: int
    cost_micros: int


def report(
    conn: Connection, tenant: str, first_day: dt.date, last_day: dt.date, model: str | None = None
) -> list[CostLine]:
    """One tenant's cost lines for the days first_day..last_day inclusive, in day and model order."""
    conditions = [daily.c.tenant_id == tenant, daily.c.day >= first_day, daily.c.day <= last_day]
    if model is not None:
        conditions.append(daily.c.model == model)
    stmt = select(daily).where(*conditions).order_by(daily.c.day, daily.c.provider, daily.c.model,
                                                      daily.c.currency, daily.c.price_table_version)
    return [
        CostLine(**{k: v for k, v in row.items() if k != "tenant_id"}) for row in conn.execute(stmt).mappings()
    ]


def totals(conn: Connection, tenant: str, first_day: dt.date, last_day: dt.date) -> dict[str, int]:
    """One tenant's total cost per currency (micro-units) for the days first_day..last_day inclusive."""
    stmt = (
        select(daily.c.currency, func.sum(daily.c.cost_micros))
        .where(daily.c.tenant_id == tenant, daily.c.day >= first_day, daily.c.day <= last_day)
        .group_by(daily.c.currency)
    )
    return {currency: int(total) for currency, total in conn.execute(stmt)}
