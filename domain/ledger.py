"""The ledger's vocabulary: what is appended, what comes back, and what can go wrong."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest canonical payload plus metadata accepted in one event; bigger content belongs in a blob store."""

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:/@-]{0,199}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]{0,99}$")


class LedgerError(Exception):
    """Base of every error the ledger reports to a caller."""


class InvalidEvent(LedgerError, ValueError):
    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"invalid event: {field_name}: {problem}")
        self.field = field_name
        self.problem = problem


class ConcurrencyError(LedgerError):
    """The stream moved on since the caller read it; nothing of the append was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id!r}: expected version {expected}, actual version {actual}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class EventIdConflict(LedgerError):
    """An event id that is already recorded with different content (a retry must resend the same event)."""

    def __init__(self, event_id: uuid.UUID, detail: str) -> None:
        super().__init__(f"event {event_id} is already recorded with different content: {detail}")
        self.event_id = event_id


class LedgerUnavailable(LedgerError):
    """The store could not be reached or failed mid-commit; the append may be retried with the same ids."""


@dataclass(frozen=True)
class NewEvent:
    """An event as a writer hands it to the ledger. Position, time and hashes are the ledger's to assign."""

    stream_id: str
    type: str
    payload: Mapping[str, Any]
    tenant_id: str = "_system"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = 1
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        if not isinstance(self.stream_id, str) or not _NAME.match(self.stream_id):
            raise InvalidEvent("stream_id", f"{self.stream_id!r} must match {_NAME.pattern}")
        if not isinstance(self.tenant_id, str) or not (self.tenant_id == "_system" or _NAME.match(self.tenant_id)):
            raise InvalidEvent("tenant_id", f"{self.tenant_id!r} must match {_NAME.pattern}")
        if not isinstance(self.type, str) or not _TYPE.match(self.type):
            raise InvalidEvent("type", f"{self.type!r} must be a PascalCase name matching {_TYPE.pattern}")
        if not isinstance(self.payload, Mapping):
            raise InvalidEvent("payload", f"must be a JSON object, got {type(self.payload).__name__}")
        if not isinstance(self.metadata, Mapping):
            raise InvalidEvent("metadata", f"must be a JSON object, got {type(self.metadata).__name__}")
        if not isinstance(self.schema_version, int) or isinstance(self.schema_version, bool) or not 1 <= self.schema_version < 2**31:
            raise InvalidEvent("schema_version", f"{self.schema_version!r} must be a positive integer")
        if not isinstance(self.event_id, uuid.UUID):
            raise InvalidEvent("event_id", f"{self.event_id!r} must be a UUID")


@dataclass(frozen=True)
class Receipt:
    """Proof of recording handed back to the writer: where the event sits and what it hashed to."""

    event_id: uuid.UUID
    position: int
    stream_id: str
    stream_version: int
    entry_hash: bytes
    chain_hash: bytes


@dataclass(frozen=True)
class RecordedEvent:
    """One ledger row as stored. `payload` and `metadata` are their canonical JSON bytes."""

    position: int
    event_id: uuid.UUID
    tenant_id: str
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    payload: bytes
    metadata: bytes
    recorded_at: str
    prev_hash: bytes
    entry_hash: bytes
    chain_hash: bytes
