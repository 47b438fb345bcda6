"""An open inference or run is closed as interrupted only once its deadline has passed."""

from __future__ import annotations

import datetime as dt

from domain.inference import GATEWAY_INTERRUPTED, InferenceRequested, deadline_after, interrupted, parse_instant
from domain.orchestration import MAX_SEQUENTIAL_INFERENCES, run_budget_s, run_interrupted

START = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


def requested(timeout_s: float = 60.0) -> dict:
    payload = InferenceRequested("r1", "openai", "gpt-4o", "primary", "eu", "k1", True,
                                 deadline_after(START, timeout_s + 30)).payload()
    payload["kind"] = "chat"
    return payload


def test_the_deadline_is_the_timeout_plus_the_grace_in_the_ledgers_time_format():
    assert requested()["deadline_at"] == "2026-11-26T10:01:30.000000Z"
    assert parse_instant(requested()["deadline_at"]) == START + dt.timedelta(seconds=90)


def test_before_its_deadline_a_request_may_still_be_live_somewhere():
    assert interrupted(requested(), START + dt.timedelta(seconds=89)) is None


def test_past_its_deadline_it_is_failed_as_interrupted_with_what_was_requested():
    failed = interrupted(requested(), START + dt.timedelta(seconds=91))
    assert failed is not None
    assert (failed["reason"], failed["request_id"], failed["deployment"], failed["kind"]) == (
        GATEWAY_INTERRUPTED, "r1", "primary", "chat")
    assert failed["swept_at"] == "2026-11-26T10:01:31.000000Z" and failed["attempts"] == []


def test_a_request_recorded_before_deadlines_existed_is_never_closed():
    legacy = {k: v for k, v in requested().items() if k != "deadline_at"}
    assert interrupted(legacy, START + dt.timedelta(days=365)) is None


def test_a_runs_budget_covers_its_longest_chain_of_inferences():
    assert MAX_SEQUENTIAL_INFERENCES == 19
    assert run_budget_s(60, 30) == 19 * 90 + 30
    closed = run_interrupted("2026-11-26T10:30:00.000000Z", "2026-11-26T10:31:00.000000Z", 3)
    assert (closed["code"], closed["status"], closed["inferences"]) == (GATEWAY_INTERRUPTED, 503, 3)
