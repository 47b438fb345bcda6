"""A deliberately small projection for consumer tests: events per tenant and type."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, Text, select
from sqlalchemy.dialects.postgresql import insert

from domain.ledger import RecordedEvent
from projections.base import Projection, on

METADATA = MetaData()
counts = Table(
    "counts", METADATA, Column("tenant_id", Text, primary_key=True), Column("type", Text, primary_key=True),
    Column("n", BigInteger, nullable=False), Column("sum_i", BigInteger, nullable=False),
)


class Counting(Projection[Counter]):
    name = "counting_test"
    version = 1
    metadata = METADATA

    def new_batch(self) -> Counter:
        return Counter()

    @on("InferenceCompleted")
    def completed(self, batch: Counter, event: RecordedEvent, payload: dict[str, Any]) -> None:
        batch[(event.tenant_id, event.type, "n")] += 1
        batch[(event.tenant_id, event.type, "sum_i")] += payload.get("i", 0)

    @on("UserInvited")
    def invited(self, batch: Counter, event: RecordedEvent, payload: dict[str, Any]) -> None:
        self.completed(batch, event, payload)

    def flush(self, conn: Connection, batch: Counter) -> None:
        keys = {(t, ty) for t, ty, _ in batch}
        rows = [{"tenant_id": t, "type": ty, "n": batch[(t, ty, "n")], "sum_i": batch[(t, ty, "sum_i")]} for t, ty in keys]
        if rows:
            stmt = insert(counts).values(rows)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["tenant_id", "type"],
                set_={"n": counts.c.n + stmt.excluded.n, "sum_i": counts.c.sum_i + stmt.excluded.sum_i},
            ))

    def report(self, conn: Connection) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in conn.execute(select(counts).order_by(counts.c.tenant_id, counts.c.type))]


def create(**_: Any) -> Counting:
    return Counting()


def expected_from_ledger(ledger) -> list[dict[str, Any]]:
    """The same figures computed straight from the ledger, the way a from-scratch rebuild must see them."""
    import orjson

    totals: dict[tuple[str, str], list[int]] = {}
    for e in ledger.iter_entries():
        if e.type in ("InferenceCompleted", "UserInvited"):
            acc = totals.setdefault((e.tenant_id, e.type), [0, 0])
            acc[0] += 1
            acc[1] += orjson.loads(e.payload).get("i", 0)
    return [{"tenant_id": t, "type": ty, "n": n, "sum_i": s} for (t, ty), (n, s) in sorted(totals.items())]
