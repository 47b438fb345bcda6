"""Reading a JetStream stream back, to check what the relay put there."""

from __future__ import annotations

from nats.js import JetStreamContext

from adapters.nats import codec


async def read_stream(js: JetStreamContext, stream: str, subject_prefix: str) -> list[tuple[int, bytes, dict[str, str]]]:
    """Every message of the stream, in sequence order: (sequence, body, headers)."""
    info = await js.stream_info(stream)
    total = info.state.messages
    out: list[tuple[int, bytes, dict[str, str]]] = []
    if total == 0:
        return out
    sub = await js.pull_subscribe(f"{subject_prefix}.>", stream=stream)
    try:
        while len(out) < total:
            for msg in await sub.fetch(min(1000, total - len(out)), timeout=5):
                out.append((msg.metadata.sequence.stream, msg.data, dict(msg.headers or {})))
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return out


def assert_exactly_once_in_order(messages, ledger) -> None:
    """Stream sequence == position, each position once, the body hashing to the ledger's entry hash."""
    hasher = ledger.genesis().hasher
    entries = {e.position: e for e in ledger.read(1, limit=10**7)}
    assert [seq for seq, _, _ in messages] == list(range(1, len(entries) + 1))
    for seq, body, headers in messages:
        entry = entries[seq]
        assert int(headers[codec.H_POSITION]) == seq
        assert headers[codec.H_EVENT_ID] == str(entry.event_id)
        assert bytes.fromhex(headers[codec.H_ENTRY_HASH]) == entry.entry_hash
        assert hasher.hash_leaf(body) == entry.entry_hash  # the body is the very bytes that were hashed
