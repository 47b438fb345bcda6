"""Inference events: the facts every dashboard, cost report and audit proof is projected from.

Payloads carry every fact a projection needs (no business arithmetic downstream): tokens, integer
micro-units of cost with the currency and price-table version, latencies in microseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

INFERENCE_STREAM_PREFIX = "inference-"


def inference_stream(request_id: str) -> str:
    return f"{INFERENCE_STREAM_PREFIX}{request_id}"


@dataclass(frozen=True)
class InferenceRequested:
    request_id: str
    provider: str
    model: str
    deployment: str
    region: str
    api_key_id: str
    stream: bool
    type = "InferenceRequested"
    schema_version = 1

    def payload(self) -> dict[str, Any]:
        return asdict(self)


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
        return asdict(self)


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
        return asdict(self)


FAILURE_REASONS = frozenset(
    {"timeout", "rate_limited", "upstream_error", "bad_request", "auth", "client_cancelled", "blocked"}
)
