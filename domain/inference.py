"""Inference events: the facts every dashboard, cost report and audit proof is projected from.

Payloads carry every fact a projection needs (no business arithmetic downstream): tokens, integer
micro-units of cost with the currency and price-table version, latencies in microseconds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from domain.entry import format_timestamp

INFERENCE_STREAM_PREFIX = "inference-"
GATEWAY_INTERRUPTED = "gateway_interrupted"


def inference_stream(request_id: str) -> str:
    return f"{INFERENCE_STREAM_PREFIX}{request_id}"


def _flat_fields(event: object) -> dict[str, Any]:
    # Every field of these events is a str, int, bool or None, so a shallow copy is what
    # dataclasses.asdict gives, without its deep copy of each value: 0.3 µs instead of 9 (two per request).
    return dict(vars(event))


@dataclass(frozen=True)
class InferenceRequested:
    request_id: str
    provider: str
    model: str
    deployment: str
    region: str
    api_key_id: str
    stream: bool
    # When the gateway will have given up on this request for sure (its timeout plus a grace), in UTC
    # (RFC 3339): past it, an InferenceRequested with no outcome was orphaned by a dead process.
    deadline_at: str | None = None
    type = "InferenceRequested"
    schema_version = 1

    def payload(self) -> dict[str, Any]:
        return _flat_fields(self)


@dataclass(frozen=True)
class InferenceCompleted:
    request_id: str
    provider: str
    model: str
    deployment: str
    region: str
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    tokens_reasoning: int
    latency_us: int
    ttft_us: int | None
    cost_micros: int
    currency: str
    price_table_version: str
    type = "InferenceCompleted"
    schema_version = 1

    def payload(self) -> dict[str, Any]:
        return _flat_fields(self)


@dataclass(frozen=True)
class InferenceFailed:
    request_id: str
    provider: str
    model: str
    deployment: str
    region: str
    reason: str  # one of FAILURE_REASONS
    detail: str
    latency_us: int
    type = "InferenceFailed"
    schema_version = 1

    def payload(self) -> dict[str, Any]:
        return _flat_fields(self)


KEY_REVOKED = "key_revoked"  # the caller's API key was revoked while its request was in flight: answer withheld
FAILURE_REASONS = frozenset(
    {"timeout", "rate_limited", "upstream_error", "bad_request", "auth", "client_cancelled", "blocked",
     GATEWAY_INTERRUPTED, KEY_REVOKED}
)
OUTCOMES = frozenset({"InferenceCompleted", "InferenceFailed"})


def deadline_after(now: dt.datetime, seconds: float) -> str:
    return format_timestamp(now + dt.timedelta(seconds=seconds))


def parse_instant(text: str) -> dt.datetime:
    """An RFC 3339 UTC timestamp as the ledger writes them (domain.entry.format_timestamp)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def interrupted(requested: dict[str, Any], now: dt.datetime) -> dict[str, Any] | None:
    """The InferenceFailed payload that closes an orphaned request, or None while it may still be live.

    `requested` is an InferenceRequested payload whose stream has no outcome. Without a deadline (events
    recorded before deadlines existed, always together with their outcome) nothing is decided.
    """
    deadline = requested.get("deadline_at")
    if not isinstance(deadline, str) or now < parse_instant(deadline):
        return None
    payload = InferenceFailed(
        request_id=requested["request_id"], provider=requested["provider"], model=requested["model"],
        deployment=requested["deployment"], region=requested["region"], reason=GATEWAY_INTERRUPTED,
        detail=f"no outcome was recorded by its deadline {deadline}: the gateway process handling it stopped",
        latency_us=0,
    ).payload()
    payload.update(kind=requested.get("kind", "chat"), attempts=[], swept_at=format_timestamp(now))
    return payload
