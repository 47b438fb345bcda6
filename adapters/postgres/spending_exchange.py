"""Rate-limit spending exchanged between API processes over PostgreSQL's NOTIFY (application/shared_budget.py).

Each process LISTENs on `nexus_spending` on a connection of its own and, every `every_s`, sends what it
spent since the last time as one or more notifications (a payload holds at most 8000 bytes). It hears its
own notifications too, and skips them by their origin. What a process spends while its connection is
down is kept, by the second it was spent in, for up to `remember_s`, and sent once it is back with its
age: the others debit it less what their buckets refilled since (TokenBucket.spent_elsewhere).

Like change notices it needs a session-mode connection: behind a pooler in transaction mode (PgBouncer's
default) the LISTEN succeeds and nothing is heard, so each process would allow the whole limit on its
own. The exchange proves that it hears (listening.py's probes, at start and every `probe_every_s`) and
says so in `hearing`; a probe that does not come back is logged as an error naming the likely cause,
and probed again after `undelivered_retry_s`. It goes on sending meanwhile: whoever does hear (a
process connected directly) still counts this one's spending.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import orjson
import psycopg

from adapters.postgres.listening import DeliveryProbes, is_probe, listening
from application.ports import SharedBudget, SpendingExchange

log = logging.getLogger(__name__)

CHANNEL = "nexus_spending"
MAX_PAYLOAD_BYTES = 7_900  # PostgreSQL refuses a NOTIFY payload of 8000 bytes or more
MAX_AMOUNT = 1_000_000  # tokens of one bucket in one notification
MAX_AGE_MS = 3_600_000
_SLOT_S = 1.0  # spending kept while disconnected is grouped by the second it was spent in
_OPAQUE_ID = re.compile(r"[0-9a-f]{32}")
_BUDGET_NAME = re.compile(r"[a-z_]{1,32}")


class Spending(NamedTuple):
    origin: str
    spent: dict[str, dict[str, int]]
    age_s: float  # it was spent at most this long ago (0: on time, within the last exchange or two)


def spending_payloads(origin: str, spent: Mapping[str, Mapping[str, int]], age_s: float = 0.0) -> Iterator[str]:
    """`spent` as NOTIFY payloads, each under MAX_PAYLOAD_BYTES: {"o": origin, "s": {budget: {id: amount}}},
    and "a": its age in milliseconds if it is late."""
    head: dict[str, object] = {"o": origin}
    age_ms = min(int(age_s * 1000), MAX_AGE_MS)
    if age_ms > 0:
        head["a"] = age_ms
    prefix = len(orjson.dumps({**head, "s": {}}))
    chunk: dict[str, dict[str, int]] = {}
    size = prefix
    for name, amounts in spent.items():
        for key, amount in amounts.items():
            amount = min(amount, MAX_AMOUNT)
            item = len(key) + len(str(amount)) + 6  # "key":amount, and its share of the budget's braces
            if name not in chunk:
                item += len(name) + 6
            if chunk and size + item > MAX_PAYLOAD_BYTES:
                yield orjson.dumps({**head, "s": chunk}).decode()
                chunk, size = {}, prefix
                item += len(name) + 6
            chunk.setdefault(name, {})[key] = amount
            size += item
    if chunk:
        yield orjson.dumps({**head, "s": chunk}).decode()


def parse_spending(payload: str) -> Spending:
    """What a payload tells; ValueError if it is not what spending_payloads makes."""
    try:
        message = orjson.loads(payload)
        origin, spent, age_ms = message["o"], message["s"], message.get("a", 0)
        if not isinstance(origin, str) or not isinstance(spent, dict):
            raise TypeError("origin or spending of the wrong type")
        if type(age_ms) is not int or not 0 <= age_ms <= MAX_AGE_MS:
            raise TypeError(f"age {age_ms!r}")
        parsed: dict[str, dict[str, int]] = {}
        for name, amounts in spent.items():
            if not _BUDGET_NAME.fullmatch(name) or not isinstance(amounts, dict):
                raise TypeError(f"budget {name!r}")
            for key, amount in amounts.items():
                if not _OPAQUE_ID.fullmatch(key) or type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
                    raise TypeError(f"amount {key!r}: {amount!r}")
            parsed[name] = amounts
        return Spending(origin, parsed, age_ms / 1000)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a spending notice ({exc}): {payload[:200]!r}") from exc


class UnsentSpending:
    """Spending that could not be told yet, by the second it was spent in, for up to `remember_s`.

    A slot's age is counted from its start, the oldest its spending can be: the others then discount a
    little more refill than the exact one, never less, so late spending never costs more than on time.
    """

    def __init__(self, remember_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._remember_s = remember_s
        self._clock = clock
        self._slots: deque[tuple[float, dict[str, dict[str, int]]]] = deque()  # (start, spending), oldest first

    def __bool__(self) -> bool:
        return bool(self._slots)

    def keep(self, spent: Mapping[str, Mapping[str, int]], since: float) -> None:
        """Spending made between `since` (on this clock) and now."""
        if not spent:
            return
        now = self._clock()
        if not self._slots or self._slots[-1][0] < now - _SLOT_S or since < self._slots[-1][0]:
            self._slots.append((since, {}))
        slot = self._slots[-1][1]
        for name, amounts in spent.items():
            kept = slot.setdefault(name, {})
            for key, amount in amounts.items():
                kept[key] = min(kept.get(key, 0) + amount, MAX_AMOUNT)
        while self._slots and self._slots[0][0] < now - self._remember_s:
            self._slots.popleft()  # a bucket of any sensible size has refilled what was spent that long ago

    def take(self) -> list[tuple[float, dict[str, dict[str, int]]]]:
        """Every slot as (its start, its spending), oldest first; none kept after."""
        now = self._clock()
        slots = [(start, spent) for start, spent in self._slots if start >= now - self._remember_s]
        self._slots.clear()
        return slots


class PostgresSpendingExchange(SpendingExchange):
    def __init__(self, url: str, *, every_s: float = 0.1, reconnect_after_s: float = 1.0,
                 remember_s: float = 120.0, probe_url: str | None = None, probe_timeout_s: float = 5.0,
                 probe_every_s: float = 30.0, undelivered_retry_s: float = 30.0) -> None:
        self._url = url
        self.probes = DeliveryProbes(CHANNEL, probe_url or url, timeout_s=probe_timeout_s, every_s=probe_every_s)
        self._undelivered_retry_s = undelivered_retry_s
        self._every_s = every_s
        self._reconnect_after_s = reconnect_after_s
        self._unsent = UnsentSpending(remember_s)
        self._counted_at = time.monotonic()  # when budget.spent_here() was last read
        self.origin = uuid.uuid4().hex  # this process, among those exchanging
        self.name = f"nexus spending {self.origin}"  # its connection's application_name
        self.listening = False  # connected, LISTEN taken
        self.hearing = False  # and a probe has come back since: the others' spending reaches this process
        self._said_unheard = False

    async def run(self, budget: SharedBudget, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._exchange(budget, stop)
            except Exception as exc:  # a lost connection, mostly: never let the exchange die
                log.warning("rate-limit spending is not exchanged (%s); retrying in %.0f s", exc,
                            self._reconnect_after_s)
            deadline = asyncio.get_running_loop().time() + self._reconnect_after_s
            while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
                self._keep_unsent(budget)  # told once the connection is back
                try:
                    await asyncio.wait_for(stop.wait(), self._every_s)
                except TimeoutError:
                    pass

    def _keep_unsent(self, budget: SharedBudget) -> None:
        since, self._counted_at = self._counted_at, time.monotonic()
        self._unsent.keep(budget.spent_here(), since)

    async def _exchange(self, budget: SharedBudget, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        probes = self.probes
        async with listening(self._url, CHANNEL, self.name) as conn:
            self.listening = True
            try:
                probes.restart()
                await probes.send_when_due(loop.time())
                self._keep_unsent(budget)
                slots = self._unsent.take()
                for i, (started_at, spent) in enumerate(slots):
                    try:
                        await self._send(conn, spent, started_at)
                    except BaseException:
                        for later_start, later in slots[i + 1:]:  # _send kept its own slot's rest
                            self._unsent.keep(later, later_start)
                        raise
                while not stop.is_set():
                    async for notify in conn.notifies(timeout=self._every_s):
                        if is_probe(notify.payload):
                            if probes.came_back(notify.payload, loop.time()) and not self.hearing:
                                self.hearing = True
                                if self._said_unheard:
                                    self._said_unheard = False
                                    log.warning("rate limits are shared again: a probe came back")
                            continue
                        try:
                            told = parse_spending(notify.payload)
                        except ValueError as exc:
                            log.warning("%s", exc)
                            continue
                        if told.origin != self.origin:
                            budget.spent_elsewhere(told.spent, told.age_s)
                    since, self._counted_at = self._counted_at, time.monotonic()
                    await self._send(conn, budget.spent_here(), since)
                    now = loop.time()
                    if probes.late(now):
                        self.hearing, self._said_unheard = False, True
                        probes.give_up(now, self._undelivered_retry_s)
                        log.error("rate limits are not shared: this process hears no other's spending (a probe sent"
                                  " %.0f s ago has not come back), so each process allows the whole limit. Is a"
                                  " pooler in transaction mode between it and PostgreSQL? Probing again in %.0f s"
                                  " (NEXUS_CHANGE_NOTICES=off stops trying; then divide the limits by the number"
                                  " of API processes)", probes.timeout_s, self._undelivered_retry_s)
                    await probes.send_when_due(now)
            finally:
                self.listening = self.hearing = False

    async def _send(self, conn: psycopg.AsyncConnection, spent: dict[str, dict[str, int]], since: float) -> None:
        """Tell `spent`, made since `since` (late if that was longer ago than an exchange); what could not be
        told is kept for the next connection."""
        age_s = time.monotonic() - since
        payloads = list(spending_payloads(self.origin, spent, age_s if age_s > 2 * self._every_s else 0.0))
        for i, payload in enumerate(payloads):
            try:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except BaseException:
                for unsent in payloads[i:]:
                    self._unsent.keep(parse_spending(unsent).spent, since)
                raise
