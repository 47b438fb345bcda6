"""What-if: history re-priced under another price table, old cost against new per tenant and model.

An analytics projection, not deployed: run it over a slice of the ledger with

    nexus replay --projection repricing --param prices=prices.json --from 2026-10-01 --to 2026-11-01

Price table file (JSON), prices in integer micro-units of `currency` per 1,000,000 tokens:

    {"version": "2026-11-what-if", "currency": "USD",
     "models": {"gpt-4o": {"input_per_1m": 2500000, "output_per_1m": 10000000},
                "anthropic/claude-sonnet": {"input_per_1m": 3000000, "output_per_1m": 15000000}}}

A model is looked up as "provider/model" first, then as "model". Each request is re-priced on its own
and rounded half up to a whole micro-unit, as a charge would be. Requests whose model the table does
not list keep their recorded cost and are counted as `unpriced_requests`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, Text, select

from domain.ledger import RecordedEvent
from projections import bulk
from projections.base import Projection, on

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class PriceTable:
    version: str
    currency: str
    prices: dict[str, tuple[int, int]]  # model -> (input, output) micro-units per 1M tokens

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> PriceTable:
        prices = {}
        for model, entry in document["models"].items():
            input_price, output_price = entry["input_per_1m"], entry["output_per_1m"]
            for value in (input_price, output_price):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"price table: {model}: prices must be non-negative integers (micro-units)")
            prices[model] = (input_price, output_price)
        return cls(str(document["version"]), str(document["currency"]), prices)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        return cls.from_json(json.loads(Path(path).read_text()))

    def cost(self, provider: str, model: str, tokens_in: int, tokens_out: int) -> int | None:
        price = self.prices.get(f"{provider}/{model}") or self.prices.get(model)
        if price is None:
            return None
        return (tokens_in * price[0] + tokens_out * price[1] + PER_TOKENS // 2) // PER_TOKENS


METADATA = MetaData()
totals = Table(
    "repricing_totals",
    METADATA,
    Column("tenant_id", Text, primary_key=True),
    Column("provider", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("currency", Text, primary_key=True),  # of the recorded (old) cost
    Column("requests", BigInteger, nullable=False),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("old_cost_micros", BigInteger, nullable=False),
    Column("new_cost_micros", BigInteger, nullable=False),
    Column("unpriced_requests", BigInteger, nullable=False),
)
_ADDITIVE = ("requests", "tokens_in", "tokens_out", "old_cost_micros", "new_cost_micros", "unpriced_requests")


@dataclass
class RepricingBatch:
    sums: dict[tuple[str, str, str, str], list[int]] = field(default_factory=dict)


class Repricing(Projection[RepricingBatch]):
    name = "repricing"
    version = 1
    metadata = METADATA

    def __init__(self, table: PriceTable) -> None:
        self.table = table

    def new_batch(self) -> RepricingBatch:
        return RepricingBatch()

    @on("InferenceCompleted")
    def completed(self, batch: RepricingBatch, event: RecordedEvent, p: dict[str, Any]) -> None:
        key = (event.tenant_id, p["provider"], p["model"], p["currency"])
        sums = batch.sums.get(key)
        if sums is None:
            sums = batch.sums[key] = [0] * len(_ADDITIVE)
        new_cost = self.table.cost(p["provider"], p["model"], p["tokens_in"], p["tokens_out"])
        sums[0] += 1
        sums[1] += p["tokens_in"]
        sums[2] += p["tokens_out"]
        sums[3] += p["cost_micros"]
        sums[4] += p["cost_micros"] if new_cost is None else new_cost
        sums[5] += new_cost is None

    def flush(self, conn: Connection, batch: RepricingBatch) -> None:
        if not batch.sums:
            return
        rows = [(*key, *sums) for key, sums in batch.sums.items()]
        bulk.write(conn, totals, rows, {name: bulk.add for name in _ADDITIVE})

    def report(self, conn: Connection) -> list[dict[str, Any]]:
        """Per tenant, provider and model: old cost, new cost and the difference, in micro-units."""
        out = []
        for row in conn.execute(select(totals).order_by(*totals.primary_key.columns)).mappings():
            line = dict(row)
            line["new_currency"] = self.table.currency
            line["price_table_version"] = self.table.version
            line["delta_micros"] = row["new_cost_micros"] - row["old_cost_micros"]
            out.append(line)
        return out


def create(prices: str | None = None, **params: str) -> Repricing:
    if params:
        raise TypeError(f"the repricing projection takes only `prices`, got {sorted(params)}")
    if prices is None:
        raise TypeError("the repricing projection needs a price table: --param prices=FILE.json")
    return Repricing(PriceTable.load(prices))
