"""An inference event's payload is every field it declares, as dataclasses.asdict gives them, and a copy."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from domain.inference import InferenceCompleted, InferenceFailed, InferenceRequested

EVENTS = [
    InferenceRequested("r1", "openai", "gpt-4o", "primary", "eu", "k1", True, "2026-11-27T03:00:00.000000Z"),
    InferenceRequested("r2", "openai", "gpt-4o", "primary", "eu", "k1", False),
    InferenceCompleted("r1", "openai", "gpt-4o", "primary", "eu", 5, 7, 0, 2, 1200, None, 345, "USD", "2026-11"),
    InferenceFailed("r1", "openai", "gpt-4o", "primary", "eu", "timeout", "upstream timed out", 30_000_000),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_the_payload_holds_exactly_the_declared_fields(event):
    assert event.payload() == asdict(event)
    assert "type" not in event.payload() and "schema_version" not in event.payload()


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_changing_a_payload_leaves_the_event_as_it_was(event):
    before = asdict(event)
    payload = event.payload()
    payload["request_id"] = "changed"
    payload["kind"] = "chat"  # as the gateway adds it
    assert asdict(event) == before
    assert event.payload() == before
