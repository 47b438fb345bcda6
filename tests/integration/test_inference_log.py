"""The inference log read model: one row per inference with its cause and run, whatever the batching,
and the same rows after a rebuild from the ledger."""
# ruff: noqa: F811

from __future__ import annotations

import uuid

from domain.inference import InferenceRequested, inference_stream
from domain.ledger import NewEvent
from projections import inference_log
from projections.inference_log import InferenceLog, LogFilter
from tests.integration.test_projections_support import completed, failed, rows_of, store  # noqa: F401


def requested(rid: str, *, tenant: str = "acme", run: str = "run-1", cause: str = "plan-event") -> NewEvent:
    fact = InferenceRequested(rid, "openai", "gpt-4o", "default", "eu-west", "key1", False)
    return NewEvent(inference_stream(rid), fact.type, fact.payload(), tenant_id=tenant,
                    metadata={"correlation_id": run, "causation_id": cause})


def outcome(event: NewEvent, opened: NewEvent, run: str = "run-1") -> NewEvent:
    return NewEvent(event.stream_id, event.type, event.payload, tenant_id=event.tenant_id,
                    metadata={"correlation_id": run, "causation_id": str(opened.event_id)})


def test_each_outcome_is_one_row_with_its_run_and_the_cause_of_its_request(ledger, store):
    a, b = requested("a", cause="subtask-1"), requested("b", cause="subtask-2")
    ledger.append([a])
    store.catch_up_from_ledger(InferenceLog(), ledger)  # `a`'s outcome comes in a later batch
    ledger.append([b, outcome(completed("b", cost_micros=7), b), outcome(failed("a"), a)])
    ledger.append([completed("c", tenant="globex")])
    store.catch_up_from_ledger(InferenceLog(), ledger)

    with store.reading("inference_log") as conn:
        rows, more = inference_log.page(conn, "acme", 10)
        assert not more
        assert [(r.inference_id, r.status, r.run_id, r.causation_id) for r in rows] == [
            ("a", "failed", "run-1", "subtask-1"), ("b", "completed", "run-1", "subtask-2")]
        assert rows[0].error_reason == "timeout" and rows[0].cost_micros == 0 and rows[0].currency is None
        assert rows[1].cost_micros == 7 and rows[1].requested_event_id == str(b.event_id)
        assert [r.inference_id for r in inference_log.page(conn, "globex", 10)[0]] == ["c"]
    assert rows_of(store, InferenceLog())["inference_pending"] == []  # both closed


def test_pages_go_newest_first_and_filters_stay_within_the_tenant(ledger, store):
    ids = [uuid.uuid4().hex[:8] for _ in range(7)]
    ledger.append([completed(rid, model="m1" if i % 2 else "m2") for i, rid in enumerate(ids)]
                  + [completed("other", tenant="globex", model="m1")])
    store.catch_up_from_ledger(InferenceLog(), ledger)
    with store.reading("inference_log") as conn:
        first, more = inference_log.page(conn, "acme", 3)
        second, _ = inference_log.page(conn, "acme", 3, first[-1].position)
        assert more and [r.inference_id for r in first + second] == ids[::-1][:6]
        m1, _ = inference_log.page(conn, "acme", 10, f=LogFilter(model="m1"))
        assert [r.inference_id for r in m1] == [ids[5], ids[3], ids[1]]
        assert inference_log.by_inference_ids(conn, "acme", ["other", ids[0]]).keys() == {ids[0]}


def test_a_rebuild_gives_the_same_rows_as_live_application_in_small_batches(ledger, store):
    for i in range(5):
        opened = requested(f"r{i}", cause=f"c{i}")
        ledger.append([opened])
        ledger.append([outcome(completed(f"r{i}"), opened)])
    ledger.append([requested("in-flight")])
    for _ in range(3):
        store.apply(InferenceLog(), ledger.read(store.checkpoint("inference_log") + 1, 2))
    store.catch_up_from_ledger(InferenceLog(), ledger)
    live = rows_of(store, InferenceLog())
    store.rebuild(InferenceLog(), ledger)
    assert rows_of(store, InferenceLog()) == live
    assert [row[1] for row in live["inference_pending"]] == ["in-flight"]
