"""Rebuilds: a new version replayed from the ledger equals the live one, and the swap is atomic."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from application.signer import SIGNING_KEYS_STREAM
from domain.ledger import NewEvent
from projections import usage
from projections.base import ProjectionFailed
from projections.rebuild import RebuildRunning
from projections.registry import DEPLOYED
from projections.store import ProjectionStore
from projections.usage import Usage
from tests.integration import test_projections_support as support
from tests.integration.test_projections_support import (
    Poisoned,
    active_schema,
    completed,
    failed,
    rows_of,
    schemas_named,
)

store = support.store  # fixture

USAGE = Usage()


def traffic(rng: random.Random, n: int) -> list[NewEvent]:
    """A mix of what the ledger holds: inference outcomes, key rotations, events no projection reads."""
    events = []
    for _ in range(n):
        roll = rng.random()
        tenant, model = rng.choice(["acme", "globex", "initech"]), rng.choice(["gpt-4o", "claude", "llama"])
        if roll < 0.7:
            events.append(
                completed(tenant=tenant, model=model, tokens_in=rng.randrange(1, 5000), tokens_out=rng.randrange(1, 900),
                          latency_us=rng.randrange(500, 20_000_000), cost_micros=rng.randrange(0, 90_000),
                          price_table=rng.choice(["v1", "v2"]))
            )
        elif roll < 0.85:
            events.append(failed(tenant=tenant, model=model, reason=rng.choice(["timeout", "rate_limited"])))
        elif roll < 0.9:
            key = f"k{rng.randrange(10**6)}"
            events.append(NewEvent(SIGNING_KEYS_STREAM, "SigningKeyRotated",
                                   {"key_id": key, "algorithm": "ed25519", "public_key": "cd" * 32, "previous_key_id": None}))
        else:
            events.append(NewEvent(f"user-{rng.randrange(50)}", "UserInvited", {"email_ref": "x"}, tenant_id=tenant))
    return events


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def someone_waits_for_a_lock(store: ProjectionStore) -> bool:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE NOT granted").scalar_one() > 0


def acme_tokens_in(store: ProjectionStore, conn=None) -> int:
    start, end = dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    if conn is None:
        with store.reading("usage") as fresh:
            return acme_tokens_in(store, fresh)
    return sum(b.tokens_in for b in usage.timeseries(conn, "acme", "day", start, end))


def test_a_rebuild_of_every_projection_equals_the_live_read_model_row_for_row(ledger, store):
    rng = random.Random(3)
    for _ in range(12):  # traffic arrives in appends, each with its own recorded_at
        ledger.append(traffic(rng, rng.randrange(1, 40)))
    events = list(ledger.iter_entries())
    for projection in DEPLOYED:
        applied = 0
        while applied < len(events):  # live: small batches, as the consumer delivers them
            size = rng.randrange(1, 23)
            store.apply(projection, events[applied : applied + size])
            applied += size
        live_schema, live = active_schema(store, projection.name), rows_of(store, projection)

        result = store.rebuild(projection, ledger, batch=37, swap_tail=10)

        assert (result.replaced, result.checkpoint) == (live_schema, len(events))
        assert active_schema(store, projection.name) == result.schema != live_schema
        assert rows_of(store, projection) == live
        assert schemas_named(store, f"rm_{projection.name}_") == [result.schema]  # the old one is dropped


def test_a_reader_during_a_rebuild_sees_the_old_version_and_the_swap_waits_for_it(ledger, store):
    ledger.append([completed(tokens_in=1) for _ in range(5)])
    store.catch_up_from_ledger(USAGE, ledger)
    ledger.append([completed(tokens_in=1) for _ in range(5)])  # not applied live
    old = active_schema(store, "usage")

    with ThreadPoolExecutor(1) as pool, store.reading("usage") as reader:
        assert acme_tokens_in(store, reader) == 5
        rebuilding = pool.submit(store.rebuild, USAGE, ledger, batch=3, swap_tail=2)
        wait_until(lambda: someone_waits_for_a_lock(store))  # the swap, held off by this reader
        assert not rebuilding.done()
        assert active_schema(store, "usage") == old
        assert acme_tokens_in(store, reader) == 5  # the old version is still there, unchanged
    result = rebuilding.result(timeout=30)

    assert acme_tokens_in(store) == 10
    assert schemas_named(store, "rm_usage_") == [result.schema]


def test_live_appliers_and_a_rebuild_neither_lose_nor_double_an_effect(ledger, store):
    rng = random.Random(8)
    ledger.append(traffic(rng, 300))
    store.ensure_deployed(USAGE)
    appending_done = threading.Event()

    def append_more() -> None:
        for _ in range(8):
            ledger.append(traffic(rng, 25))
            time.sleep(0.01)
        appending_done.set()

    def apply_live() -> None:
        while not appending_done.is_set() or store.checkpoint("usage") < ledger.head().size:
            store.catch_up_from_ledger(USAGE, ledger, batch=17)

    with ThreadPoolExecutor(2) as pool:
        appender, applier = pool.submit(append_more), pool.submit(apply_live)
        store.rebuild(USAGE, ledger, batch=40, swap_tail=20)
        appender.result(timeout=60)
        applier.result(timeout=60)
    assert store.catch_up_from_ledger(USAGE, ledger) == 500

    with store.scratch(USAGE) as replayed:
        replayed.fill_from_ledger(ledger, 1, 500)
        assert rows_of(store, USAGE) == rows_of(store, USAGE, replayed.schema)


def test_a_failed_rebuild_leaves_the_old_version_serving_and_records_why(ledger, store):
    ledger.append([completed("a"), completed("bad"), completed("c")])
    store.catch_up_from_ledger(USAGE, ledger)
    old, before = active_schema(store, "usage"), rows_of(store, USAGE)

    with pytest.raises(ProjectionFailed):
        store.rebuild(Poisoned("bad"), ledger, swap_tail=0)

    assert active_schema(store, "usage") == old and rows_of(store, USAGE) == before
    assert schemas_named(store, "rm_usage_") == [old]  # the half-built version is gone
    [error] = store.errors("usage")
    assert error["schema_name"] != old and error["position"] == 2
    assert not store.status([USAGE])[0].stopped  # the live projection never failed


def test_one_rebuild_at_a_time_and_leftovers_of_an_interrupted_one_are_dropped(ledger, store):
    ledger.append([completed() for _ in range(3)])
    with store.engine.begin() as conn:  # what a rebuild killed half-way leaves behind
        store.create_model(conn, USAGE, "rm_usage_999", unlogged=True)
    refused: list[Exception] = []

    def second_rebuild(_schema: str) -> None:
        try:
            store.rebuild(USAGE, ledger)
        except RebuildRunning as exc:
            refused.append(exc)

    result = store.rebuild(USAGE, ledger, before_swap=second_rebuild)

    assert len(refused) == 1
    assert schemas_named(store, "rm_usage_") == [result.schema]


def test_a_rebuild_deploys_a_projection_that_was_never_applied(ledger, store):
    ledger.append([completed(tokens_in=7) for _ in range(3)])
    result = store.rebuild(USAGE, ledger, swap_tail=0)
    assert (result.replaced, result.checkpoint, store.checkpoint("usage")) == (None, 3, 3)
    assert acme_tokens_in(store) == 21


def test_rebuild_after_rebuild_in_one_process_keeps_its_statement_caches_bounded(ledger, store, monkeypatch):
    """Each rebuild writes to a new schema; what was compiled for the old ones must not pile up."""
    from projections import bulk

    monkeypatch.setattr(bulk, "_CACHE_MAX", 6)
    monkeypatch.setattr(bulk, "_SQL", {})  # as in a fresh process
    monkeypatch.setattr(bulk, "_STAGES", {})
    rng = random.Random(5)
    for round_ in range(4):
        ledger.append(traffic(rng, 30))
        store.apply(USAGE, list(ledger.iter_entries(store.checkpoint(USAGE.name) + 1)))
        live = rows_of(store, USAGE)
        store.rebuild(USAGE, ledger, batch=11, swap_tail=5)
        assert rows_of(store, USAGE) == live, f"round {round_}"
        assert len(bulk._SQL) <= 6 and len(bulk._STAGES) <= 6
