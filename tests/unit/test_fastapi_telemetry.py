"""FastAPI's own OpenTelemetry instrumentation runs only where an operator asked for it."""

from __future__ import annotations

from api.app import _fastapi_telemetry


def test_by_default_fastapi_does_not_look_for_a_telemetry_provider_on_every_request(monkeypatch):
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE", raising=False)
    assert _fastapi_telemetry() == {"tracing": False, "metrics": False, "logs": False}


def test_asking_fastapi_to_configure_opentelemetry_keeps_its_instrumentation(monkeypatch):
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    assert _fastapi_telemetry() is None  # FastAPI's defaults: tracing, metrics and logs on
