"""How a ledger entry travels over NATS (docs/events.md is the contract for downstream consumers).

The message body is exactly the entry's canonical bytes (docs/ledger-format.md), so a consumer can
check `H(0x00 || body) == Nexus-Entry-Hash` without trusting the transport; the hashes and the
routing facts travel in headers.
"""

from __future__ import annotations

import re
import uuid

import orjson

from domain.canonical import canonical_json
from domain.entry import recorded_entry_bytes
from domain.ledger import RecordedEvent

H_MSG_ID = "Nats-Msg-Id"
H_EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
H_POSITION = "Nexus-Position"
H_EVENT_ID = "Nexus-Event-Id"
H_TENANT = "Nexus-Tenant"
H_PREV_HASH = "Nexus-Prev-Hash"
H_ENTRY_HASH = "Nexus-Entry-Hash"
H_CHAIN_HASH = "Nexus-Chain-Hash"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def token(text: str) -> str:
    """A subject token: characters outside [A-Za-z0-9_-] become '_' (the exact value is in the headers)."""
    return _UNSAFE.sub("_", text) or "_"


def category_of(stream_id: str) -> str:
    """The stream's category: its id up to the first '-' ('inference-42' -> 'inference')."""
    return stream_id.split("-", 1)[0]


def subject_for(prefix: str, event: RecordedEvent) -> str:
    return f"{prefix}.{token(event.tenant_id)}.{token(category_of(event.stream_id))}.{token(event.type)}"


def encode(ledger_id: str, event: RecordedEvent) -> tuple[bytes, dict[str, str]]:
    body = recorded_entry_bytes(ledger_id, event)
    headers = {
        H_MSG_ID: str(event.event_id),
        H_EXPECTED_LAST_SEQ: str(event.position - 1),
        H_POSITION: str(event.position),
        H_EVENT_ID: str(event.event_id),
        H_TENANT: event.tenant_id,
        H_PREV_HASH: event.prev_hash.hex(),
        H_ENTRY_HASH: event.entry_hash.hex(),
        H_CHAIN_HASH: event.chain_hash.hex(),
    }
    return body, headers


def decode(body: bytes, headers: dict[str, str]) -> RecordedEvent:
    entry = orjson.loads(body)
    return RecordedEvent(
        position=entry["position"],
        event_id=uuid.UUID(entry["event_id"]),
        tenant_id=entry["tenant_id"],
        stream_id=entry["stream_id"],
        stream_version=entry["stream_version"],
        type=entry["type"],
        schema_version=entry["schema_version"],
        payload=canonical_json(entry["payload"]),
        metadata=canonical_json(entry["metadata"]),
        recorded_at=entry["recorded_at"],
        prev_hash=bytes.fromhex(headers[H_PREV_HASH]),
        entry_hash=bytes.fromhex(headers[H_ENTRY_HASH]),
        chain_hash=bytes.fromhex(headers[H_CHAIN_HASH]),
    )
