"""A ledger entry and its binary COPY row, encoded as far as possible before its position is known.

The caller's thread does this part of an append (EncodedEvent); the committer splices in position,
version, time and hashes (ledger_committer.py). check_entry_encoding proves at start-up that the
spliced entry is byte for byte domain.entry.entry_bytes.
"""

from __future__ import annotations

import struct

import orjson

from domain.canonical import NotCanonicalisable, canonical_json
from domain.entry import FORMAT_VERSION, Genesis, entry_bytes, entry_hash
from domain.hashing import LEAF_PREFIX
from domain.ledger import (
    MAX_PAYLOAD_BYTES,
    InvalidEvent,
    NewEvent,
)

# --- PostgreSQL binary COPY framing (https://www.postgresql.org/docs/current/sql-copy.html) --------

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header-extension length
COPY_TRAILER = b"\xff\xff"
_FIELD_COUNT = struct.pack(">h", 13)
_LEN4 = struct.pack(">i", 4)
_LEN16 = struct.pack(">i", 16)
LEN32 = struct.pack(">i", 32)
_pack_len = struct.Struct(">i").pack
pack_tail = struct.Struct(">iqiqiq").pack  # position, stream_version, recorded_at: three int8 fields
_FORMAT = b"%d" % FORMAT_VERSION
_ENTRY_START = LEAF_PREFIX + b'{"event_id":"'  # event ids are UUIDs: their JSON string needs no escaping
_FRAGMENTS_MAX = 50_000


class EncodedEvent:
    """One event as far as it can be encoded before its position is known, done in the caller's thread.

    The canonical entry (domain.entry.entry_bytes) is `entry_head + position + recorded_at part +
    entry_mid + stream_version + entry_tail`; `row_head` is the binary COPY row up to the position.
    """

    __slots__ = (
        "event_id", "id_text", "tenant_id", "stream_id", "type", "schema_version", "payload", "metadata",
        "entry_head", "entry_mid", "entry_tail", "row_head",
    )

    def __init__(self, event: NewEvent, ledger_json: bytes) -> None:
        try:
            payload = canonical_json(event.payload if type(event.payload) is dict else dict(event.payload))
        except (NotCanonicalisable, TypeError) as exc:
            raise InvalidEvent("payload", str(exc)) from None
        if event.metadata:
            try:
                metadata = canonical_json(event.metadata if type(event.metadata) is dict else dict(event.metadata))
            except (NotCanonicalisable, TypeError) as exc:
                raise InvalidEvent("metadata", str(exc)) from None
        else:
            metadata = b"{}"
        if len(payload) + len(metadata) > MAX_PAYLOAD_BYTES:
            raise InvalidEvent(
                "payload",
                f"{len(payload) + len(metadata)} bytes of payload and metadata; the limit is {MAX_PAYLOAD_BYTES}",
            )
        event_id = event.event_id
        id_text = str(event_id)
        key = (event.tenant_id, event.stream_id, event.type, event.schema_version)
        fragments = _fragments.get(key)
        if fragments is None:
            fragments = _event_fragments(*key)
        entry_mid, entry_tail, row_names = fragments
        self.event_id = event_id
        self.id_text = id_text
        self.tenant_id = event.tenant_id
        self.stream_id = event.stream_id
        self.type = event.type
        self.schema_version = event.schema_version
        self.payload = payload
        self.metadata = metadata
        self.entry_mid = entry_mid
        self.entry_tail = entry_tail
        # LEAF_PREFIX leads, so that the committer hashes one join: entry_hash = H(0x00 || entry).
        self.entry_head = b"".join((
            _ENTRY_START, id_text.encode(), b'","format":', _FORMAT, b',"ledger_id":', ledger_json,
            b',"metadata":', metadata, b',"payload":', payload, b',"position":',
        ))
        # json's binary input format is its text, so the canonical bytes go into the row unchanged.
        self.row_head = b"".join((
            _FIELD_COUNT, _LEN16, event_id.bytes, row_names, _pack_len(len(payload)), payload,
            _pack_len(len(metadata)), metadata,
        ))


_fragments: dict[tuple[str, str, str, int], tuple[bytes, bytes, bytes]] = {}
"""Encoded pieces that depend only on (tenant, stream, type, schema version), shared by all threads."""


def _event_fragments(tenant_id: str, stream_id: str, type_: str, schema_version: int) -> tuple[bytes, bytes, bytes]:
    dumps = orjson.dumps
    entry_mid = b"".join((
        b',"schema_version":', b"%d" % schema_version, b',"stream_id":', dumps(stream_id), b',"stream_version":',
    ))
    entry_tail = b"".join((b',"tenant_id":', dumps(tenant_id), b',"type":', dumps(type_), b"}"))
    tenant, stream, type_bytes = tenant_id.encode(), stream_id.encode(), type_.encode()
    row_names = b"".join((
        _pack_len(len(tenant)), tenant, _pack_len(len(stream)), stream, _pack_len(len(type_bytes)), type_bytes,
        _LEN4, struct.pack(">i", schema_version),
    ))
    if len(_fragments) >= _FRAGMENTS_MAX:
        _fragments.clear()
    _fragments[(tenant_id, stream_id, type_, schema_version)] = (entry_mid, entry_tail, row_names)
    return entry_mid, entry_tail, row_names


def row_values(
    enc: EncodedEvent, position: int, version: int, recorded_at: str, prev: bytes, leaf: bytes, chain: bytes
) -> str:
    """One entry as an SQL VALUES row. Ids are UUIDs and names match the NewEvent patterns: no quotes."""
    return (
        f"('{enc.id_text}','{enc.tenant_id}','{enc.stream_id}','{enc.type}',{enc.schema_version},"
        f"{_literal(enc.payload)},{_literal(enc.metadata)},{position},{version},'{recorded_at}',"
        f"decode('{prev.hex()}','hex'),decode('{leaf.hex()}','hex'),decode('{chain.hex()}','hex'))"
    )


def _literal(text: bytes) -> str:
    """An SQL string literal; the committer's session has standard_conforming_strings on."""
    return "'" + text.decode().replace("'", "''") + "'"


def check_entry_encoding(genesis: Genesis) -> None:
    """The committer splices entries from pieces; refuse to start if they ever differ from entry_bytes."""
    event = NewEvent("check-stream", "EncodingChecked", {"k": [1, "é"]}, tenant_id="acme", metadata={"m": True})
    encoded = EncodedEvent(event, orjson.dumps(genesis.ledger_id))
    recorded_at = "2000-01-01T00:00:00.000000Z"
    spliced = b"".join((
        encoded.entry_head, b"7", b',"recorded_at":', orjson.dumps(recorded_at), encoded.entry_mid, b"3",
        encoded.entry_tail,
    ))
    reference = LEAF_PREFIX + entry_bytes(
        ledger_id=genesis.ledger_id, position=7, event_id=str(event.event_id), tenant_id="acme",
        stream_id="check-stream", stream_version=3, type="EncodingChecked", schema_version=1,
        payload=encoded.payload, metadata=canonical_json({"m": True}), recorded_at=recorded_at,
    )
    if spliced != reference or genesis.hasher.digest(spliced) != entry_hash(genesis.hasher, reference[1:]):
        raise AssertionError("the committer's entry encoding differs from domain.entry.entry_bytes")
