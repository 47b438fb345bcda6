"""Read models over the real ledger: exact sums, percentiles within the histogram's resolution,
exactly-once application (checkpoints), gaps and handler failures that stop loudly, lag in status."""

from __future__ import annotations

import datetime as dt
import math
import random
import time

import pytest

from application.signer import SIGNING_KEYS_STREAM
from domain.ledger import NewEvent
from projections import audit_index, costs, usage
from projections.audit_index import AuditIndex
from projections.base import ProjectionFailed, ProjectionGap, ProjectionOutdated, ProjectionStopped
from projections.costs import Costs
from projections.histogram import RATIO, bucket_of
from projections.usage import Usage
from tests.integration import test_projections_support as support
from tests.integration.test_projections_support import BrokenFlush, Poisoned, completed, failed, recorded, rows_of

store = support.store  # fixture

USAGE, COSTS, AUDIT = Usage(), Costs(), AuditIndex()
UTC = dt.UTC


def around_now() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(UTC)
    return now - dt.timedelta(days=2), now + dt.timedelta(days=2)


def totals(buckets: list[usage.UsageBucket]) -> dict[str, int]:
    fields = ("requests", "errors", "tokens_in", "tokens_out", "cost_micros")
    return {f: sum(getattr(b, f) for b in buckets) for f in fields}


# --- usage ----------------------------------------------------------------------------------------


def test_usage_sums_requests_errors_tokens_and_cost_per_tenant_provider_and_model(ledger, store):
    ledger.append(
        [
            completed(tenant="acme", model="gpt-4o", tokens_in=100, tokens_out=10, cost_micros=1_000),
            completed(tenant="acme", model="gpt-4o", tokens_in=200, tokens_out=20, cost_micros=2_000),
            completed(tenant="acme", provider="anthropic", model="claude", tokens_in=50, tokens_out=5, cost_micros=700),
            failed(tenant="acme", model="gpt-4o"),
            completed(tenant="globex", model="gpt-4o", tokens_in=999, tokens_out=99, cost_micros=9_999),
        ]
    )
    store.catch_up_from_ledger(USAGE, ledger)
    start, end = around_now()
    with store.reading("usage") as conn:
        for granularity in usage.GRANULARITIES:
            assert totals(usage.timeseries(conn, "acme", granularity, start, end)) == {
                "requests": 4, "errors": 1, "tokens_in": 350, "tokens_out": 35, "cost_micros": 3_700,
            }
            assert totals(usage.timeseries(conn, "acme", granularity, start, end, model="gpt-4o")) == {
                "requests": 3, "errors": 1, "tokens_in": 300, "tokens_out": 30, "cost_micros": 3_000,
            }
            assert totals(usage.timeseries(conn, "acme", granularity, start, end, provider="anthropic")) == {
                "requests": 1, "errors": 0, "tokens_in": 50, "tokens_out": 5, "cost_micros": 700,
            }
            assert totals(usage.timeseries(conn, "globex", granularity, start, end))["cost_micros"] == 9_999
        assert usage.timeseries(conn, "nobody", "day", start, end) == []


def test_latency_percentiles_land_in_the_same_histogram_bucket_as_the_exact_ones(ledger, store):
    rng = random.Random(5)
    latencies = [int(rng.lognormvariate(12.5, 1.0)) for _ in range(500)]
    ledger.append([completed(latency_us=latency) for latency in latencies] + [failed(latency_us=10**9)])
    store.catch_up_from_ledger(USAGE, ledger)
    ordered = sorted(latencies)
    start, end = around_now()
    with store.reading("usage") as conn:
        answers = [usage.summary(conn, "acme", start, end)]
        answers += [b for g in usage.GRANULARITIES for b in usage.timeseries(conn, "acme", g, start, end)]
    for answer in answers:
        assert answer.requests == 501 and answer.errors == 1
        assert answer.latency_max_us == ordered[-1]  # failures are counted, not timed
        assert answer.latency_mean_us == sum(latencies) // len(latencies)
        for q, got in ((0.50, answer.p50_us), (0.95, answer.p95_us), (0.99, answer.p99_us)):
            exact = ordered[math.ceil(q * len(ordered)) - 1]
            assert got is not None and bucket_of(got) == bucket_of(exact)
            assert exact <= got <= exact * RATIO


def test_summary_of_any_range_adds_the_day_hour_and_minute_buckets_that_cover_it(store):
    rng = random.Random(11)
    base = dt.datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
    times = sorted(base + dt.timedelta(seconds=rng.randrange(0, 3 * 86400)) for _ in range(400))
    latencies = [rng.randrange(1_000, 5_000_000) for _ in times]
    events = recorded([completed(latency_us=lat) for lat in latencies], times)
    ranges = [
        (base, base + dt.timedelta(days=3)),
        (base + dt.timedelta(hours=1, minutes=7), base + dt.timedelta(days=2, hours=5, minutes=31)),
        (base + dt.timedelta(minutes=13, seconds=20), base + dt.timedelta(minutes=58)),
    ]
    with store.scratch(USAGE) as model:
        model.apply(events)
        with model.reading() as conn:
            for start, end in ranges:
                # Ranges resolve to whole minutes: the start's minute is in, the end's minute is in if it started.
                lo, hi = usage._floor(start, "minute"), usage._ceil(end, "minute")
                inside = sorted(lat for lat, t in zip(latencies, times, strict=True) if lo <= t < hi)
                got = usage.summary(conn, "acme", start, end)
                assert got.requests == len(inside)
                assert got.latency_max_us == inside[-1]
                exact_p95 = inside[math.ceil(0.95 * len(inside)) - 1]
                assert bucket_of(got.p95_us) == bucket_of(exact_p95)


def test_cover_splits_a_range_into_whole_days_then_hours_then_minutes():
    t = lambda d, h, m=0, s=0: dt.datetime(2026, 3, d, h, m, s, tzinfo=UTC)  # noqa: E731
    assert usage.cover(t(1, 22, 7, 30), t(4, 2, 15)) == [
        ("minute", t(1, 22, 7), t(1, 23)),
        ("hour", t(1, 23), t(2, 0)),
        ("day", t(2, 0), t(4, 0)),
        ("hour", t(4, 0), t(4, 2)),
        ("minute", t(4, 2), t(4, 2, 15)),
    ]
    assert usage.cover(t(1, 10, 5), t(1, 10, 9)) == [("minute", t(1, 10, 5), t(1, 10, 9))]
    assert usage.cover(t(1, 10), t(1, 10)) == []


# --- costs ----------------------------------------------------------------------------------------


def test_cost_report_keeps_models_currencies_and_price_tables_apart_per_day(ledger, store):
    ledger.append(
        [
            completed(model="gpt-4o", cost_micros=1_000, price_table="v1"),
            completed(model="gpt-4o", cost_micros=1_100, price_table="v1"),
            completed(model="gpt-4o", cost_micros=900, price_table="v2"),
            completed(model="mistral-large", provider="mistral", cost_micros=500, currency="EUR", price_table="v1"),
            failed(model="gpt-4o"),
            completed(tenant="globex", model="gpt-4o", cost_micros=7_777, price_table="v1"),
        ]
    )
    store.catch_up_from_ledger(COSTS, ledger)
    today = dt.datetime.now(UTC).date()
    with store.reading("costs") as conn:
        lines = costs.report(conn, "acme", today - dt.timedelta(days=1), today + dt.timedelta(days=1))
        assert [(c.provider, c.model, c.currency, c.price_table_version, c.requests, c.cost_micros) for c in lines] == [
            ("mistral", "mistral-large", "EUR", "v1", 1, 500),
            ("openai", "gpt-4o", "USD", "v1", 2, 2_100),
            ("openai", "gpt-4o", "USD", "v2", 1, 900),
        ]
        assert costs.totals(conn, "acme", today, today) == {"EUR": 500, "USD": 3_000}
        assert costs.totals(conn, "globex", today, today) == {"USD": 7_777}
        assert costs.report(conn, "acme", today + dt.timedelta(days=1), today + dt.timedelta(days=9)) == []


# --- audit index ----------------------------------------------------------------------------------


def test_audit_index_finds_events_by_id_lists_streams_counts_types_and_key_rotations(ledger, store):
    inference = completed("r1")
    placed = NewEvent("order-7", "OrderPlaced", {"n": 1}, tenant_id="acme")
    shipped = NewEvent("order-7", "OrderShipped", {"n": 2}, tenant_id="acme")
    rotation = NewEvent(
        SIGNING_KEYS_STREAM, "SigningKeyRotated",
        {"key_id": "k2", "algorithm": "ed25519", "public_key": "ab" * 32, "previous_key_id": "k1"},
    )
    receipts = ledger.append([inference, placed, shipped, rotation, failed(tenant="globex")])
    store.catch_up_from_ledger(AUDIT, ledger)
    with store.reading("audit_index") as conn:
        found = audit_index.locate(conn, "acme", inference.event_id)
        assert found is not None and (found.position, found.stream_id, found.stream_version) == (
            receipts[0].position, "inference-r1", 1,
        )
        assert audit_index.locate(conn, "globex", inference.event_id) is None  # another tenant's event
        assert [(e.stream_version, e.position, e.type) for e in audit_index.stream(conn, "acme", "order-7")] == [
            (1, receipts[1].position, "OrderPlaced"), (2, receipts[2].position, "OrderShipped"),
        ]
        assert audit_index.counts(conn, "acme") == {"InferenceCompleted": 1, "OrderPlaced": 1, "OrderShipped": 1}
        assert audit_index.counts(conn, "globex") == {"InferenceFailed": 1}
        [rotated] = audit_index.rotations(conn)
        assert (rotated.position, rotated.key_id, rotated.previous_key_id) == (receipts[3].position, "k2", "k1")


# --- exactly once ---------------------------------------------------------------------------------


def test_applying_the_same_batch_twice_changes_nothing(ledger, store):
    ledger.append([completed() for _ in range(5)] + [failed()])
    events = ledger.read()
    assert store.apply(USAGE, events) == 6
    once = rows_of(store, USAGE)
    assert store.apply(USAGE, events) == 6
    assert store.apply(USAGE, events[2:4]) == 6
    assert rows_of(store, USAGE) == once


def test_a_redelivery_overlapping_new_events_applies_only_the_new_ones(ledger, store):
    ledger.append([completed(tokens_in=i) for i in range(1, 9)])
    events = ledger.read()
    store.apply(COSTS, events[:5])
    assert store.apply(COSTS, events[2:]) == 8
    with store.scratch(COSTS) as once:
        once.apply(events)
        assert rows_of(store, COSTS) == rows_of(store, COSTS, once.schema)
    with store.reading("costs") as conn:
        [line] = costs.report(conn, "acme", dt.date.min, dt.date.max)
    assert (line.requests, line.tokens_in) == (8, sum(range(1, 9)))


def test_events_that_skip_a_position_raise_a_gap_and_apply_nothing(ledger, store):
    ledger.append([completed() for _ in range(10)])
    events = ledger.read()
    store.apply(USAGE, events[:3])
    before = rows_of(store, USAGE)
    with pytest.raises(ProjectionGap) as gap:
        store.apply(USAGE, events[4:])
    assert (gap.value.expected, gap.value.found) == (4, 5)
    with pytest.raises(ProjectionGap):
        store.apply(USAGE, events[3:4] + events[5:])  # continues, then skips one: still nothing applied
    assert store.checkpoint("usage") == 3
    assert rows_of(store, USAGE) == before


def test_a_failing_handler_stops_the_projection_records_the_error_and_writes_nothing(ledger, store):
    ledger.append([completed("ok-1"), completed("ok-2")])
    store.catch_up_from_ledger(USAGE, ledger)
    before = rows_of(store, USAGE)
    receipts = ledger.append([completed("ok-3"), completed("bad"), completed("ok-4")])

    with pytest.raises(ProjectionFailed) as failure:
        store.catch_up_from_ledger(Poisoned("bad"), ledger)
    assert (failure.value.position, failure.value.event_type) == (receipts[1].position, "InferenceCompleted")
    assert isinstance(failure.value.cause, ValueError)
    assert store.checkpoint("usage") == 2
    assert rows_of(store, USAGE) == before  # not even ok-3, which came before the bad one in the batch

    [status] = store.status([USAGE])
    assert status.stopped and "cannot handle this one" in (status.last_error or "")
    assert store.errors("usage")[0]["position"] == receipts[1].position
    with pytest.raises(ProjectionStopped):  # stopped means stopped, whatever code is offered
        store.catch_up_from_ledger(USAGE, ledger)

    store.resume("usage")  # after the fix is deployed
    assert store.catch_up_from_ledger(USAGE, ledger) == 5
    assert not store.status([USAGE])[0].stopped


def test_a_failing_flush_rolls_back_everything_it_wrote(ledger, store):
    ledger.append([completed() for _ in range(3)])
    store.ensure_deployed(USAGE)
    with pytest.raises(ProjectionFailed) as failure:
        store.catch_up_from_ledger(BrokenFlush(), ledger)
    assert failure.value.position is None and "disk on fire" in str(failure.value)
    assert store.checkpoint("usage") == 0
    assert rows_of(store, USAGE) == {"usage_buckets": []}
    assert store.status([USAGE])[0].stopped


def test_code_of_another_version_is_refused_until_a_rebuild(ledger, store):
    class UsageV2(Usage):
        version = 2

    ledger.append([completed()])
    store.catch_up_from_ledger(USAGE, ledger)
    with pytest.raises(ProjectionOutdated):
        store.catch_up_from_ledger(UsageV2(), ledger)
    store.rebuild(UsageV2(), ledger)
    ledger.append([completed()])
    assert store.catch_up_from_ledger(UsageV2(), ledger) == 2


# --- status ---------------------------------------------------------------------------------------


def test_status_shows_checkpoint_head_and_lag_in_events_and_seconds(ledger, store):
    ledger.append([completed() for _ in range(4)])
    ledger.append([completed() for _ in range(6)])
    store.apply(USAGE, ledger.read(limit=4))
    time.sleep(0.3)
    usage_status, costs_status = store.status([USAGE, COSTS])
    assert (usage_status.checkpoint, usage_status.head, usage_status.lag_events) == (4, 10, 6)
    assert usage_status.lag_seconds >= 0.3 and not usage_status.stopped and usage_status.last_error is None
    assert (costs_status.active_schema, costs_status.checkpoint, costs_status.lag_events) == (None, 0, 10)

    store.catch_up_from_ledger(USAGE, ledger)
    [caught_up] = store.status([USAGE])
    assert (caught_up.lag_events, caught_up.lag_seconds) == (0, 0.0)


def test_names_with_tabs_quotes_braces_and_backslashes_survive_the_bulk_write(ledger, store):
    odd = 'we\\ird\t"model",{x}\n'
    ledger.append([completed(model=odd, cost_micros=5), completed(model=odd, cost_micros=6)])
    store.catch_up_from_ledger(COSTS, ledger)
    with store.reading("costs") as conn:
        [line] = costs.report(conn, "acme", dt.date.min, dt.date.max, model=odd)
    assert (line.model, line.requests, line.cost_micros) == (odd, 2, 11)
