"""Rate-limit spending exchanged between API processes over PostgreSQL's NOTIFY (application/shared_budget.py).

Each process LISTENs on `nexus_spending` on a connection of its own and, every `every_s`, sends what it
spent since the last time as one or more notifications (a payload holds at most 8000 bytes). It hears its
own notifications too, and skips them by their origin. What a process spends while its connection is
down is not sent later: for that moment the other processes do not count it. Like change notices it
needs a session-mode connection (not PgBouncer's transaction mode).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterator, Mapping

import orjson

from adapters.postgres.listening import listening
from application.ports import SharedBudget, SpendingExchange

log = logging.getLogger(__name__)

CHANNEL = "nexus_spending"
MAX_PAYLOAD_BYTES = 7_900  # PostgreSQL refuses a NOTIFY payload of 8000 bytes or more
_OPAQUE_ID = re.compile(r"[0-9a-f]{32}")
_BUDGET_NAME = re.compile(r"[a-z_]{1,32}")


def spending_payloads(origin: str, spent: Mapping[str, Mapping[str, int]]) -> Iterator[str]:
    """`spent` as NOTIFY payloads, each under MAX_PAYLOAD_BYTES: {"o": origin, "s": {budget: {id: amount}}}."""
    prefix = len(orjson.dumps({"o": origin, "s": {}}))
    chunk: dict[str, dict[str, int]] = {}
    size = prefix
    for name, amounts in spent.items():
        for key, amount in amounts.items():
            item = len(key) + len(str(amount)) + 6  # "key":amount, and its share of the budget's braces
            if name not in chunk:
                item += len(name) + 6
            if chunk and size + item > MAX_PAYLOAD_BYTES:
                yield orjson.dumps({"o": origin, "s": chunk}).decode()
                chunk, size = {}, prefix
                item += len(name) + 6
            chunk.setdefault(name, {})[key] = amount
            size += item
    if chunk:
        yield orjson.dumps({"o": origin, "s": chunk}).decode()


def parse_spending(payload: str) -> tuple[str, dict[str, dict[str, int]]]:
    """(origin, spending) from a payload; ValueError if it is not what spending_payloads makes."""
    try:
        message = orjson.loads(payload)
        origin, spent = message["o"], message["s"]
        if not isinstance(origin, str) or not isinstance(spent, dict):
            raise TypeError("origin or spending of the wrong type")
        parsed: dict[str, dict[str, int]] = {}
        for name, amounts in spent.items():
            if not _BUDGET_NAME.fullmatch(name) or not isinstance(amounts, dict):
                raise TypeError(f"budget {name!r}")
            for key, amount in amounts.items():
                if not _OPAQUE_ID.fullmatch(key) or type(amount) is not int or not 0 < amount <= 1_000_000:
                    raise TypeError(f"amount {key!r}: {amount!r}")
            parsed[name] = amounts
        return origin, parsed
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a spending notice ({exc}): {payload[:200]!r}") from exc


class PostgresSpendingExchange(SpendingExchange):
    def __init__(self, url: str, *, every_s: float = 0.1, reconnect_after_s: float = 1.0) -> None:
        self._url = url
        self._every_s = every_s
        self._reconnect_after_s = reconnect_after_s
        self.origin = uuid.uuid4().hex  # this process, among those exchanging
        self.listening = False

    async def run(self, budget: SharedBudget, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._exchange(budget, stop)
            except Exception as exc:  # a lost connection, mostly: never let the exchange die
                log.warning("rate-limit spending is not exchanged (%s); retrying in %.0f s", exc,
                            self._reconnect_after_s)
            deadline = asyncio.get_running_loop().time() + self._reconnect_after_s
            while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
                budget.spent_here()  # nobody can be told meanwhile: keep the counts from piling up
                try:
                    await asyncio.wait_for(stop.wait(), self._every_s)
                except TimeoutError:
                    pass

    async def _exchange(self, budget: SharedBudget, stop: asyncio.Event) -> None:
        async with listening(self._url, CHANNEL) as conn:
            self.listening = True
            try:
                while not stop.is_set():
                    async for notify in conn.notifies(timeout=self._every_s):
                        try:
                            origin, spent = parse_spending(notify.payload)
                        except ValueError as exc:
                            log.warning("%s", exc)
                            continue
                        if origin != self.origin:
                            budget.spent_elsewhere(spent)
                    for payload in spending_payloads(self.origin, budget.spent_here()):
                        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            finally:
                self.listening = False
