"""Regenerates tests/vectors/ledger-format.json. Run only when the format version changes."""

from __future__ import annotations

import json
from pathlib import Path

from domain.canonical import canonical_json
from domain.entry import Genesis, chain_link, entry_bytes, entry_hash
from domain.merkle import CompactRange

ENTRIES = [
    {"event_id": "00000000-0000-4000-8000-000000000001", "tenant_id": "acme", "stream_id": "tenant-acme",
     "stream_version": 1, "type": "TenantCreated", "schema_version": 1,
     "payload": {"name": "Acme Ltd", "plan": "enterprise"}, "metadata": {"actor": "cli"},
     "recorded_at": "2026-11-26T06:00:00.000000Z"},
    {"event_id": "00000000-0000-4000-8000-000000000002", "tenant_id": "acme", "stream_id": "inference-7",
     "stream_version": 1, "type": "InferenceCompleted", "schema_version": 1,
     "payload": {"model": "openai/gpt-4o", "tokens_in": 12, "tokens_out": 40, "cost_micros": 615,
                 "latency_ms": 231.5, "note": "caf\u00e9 \u20ac \U0001F600 \"quoted\"\n"},
     "metadata": {"correlation_id": "run-1", "causation_id": None},
     "recorded_at": "2026-11-26T06:00:00.123456Z"},
    {"event_id": "00000000-0000-4000-8000-000000000003", "tenant_id": "_system", "stream_id": "ledger-signing-keys",
     "stream_version": 1, "type": "SigningKeyRotated", "schema_version": 1,
     "payload": {"key_id": "0123456789abcdef", "big": 9007199254740991, "small": 1e-7, "flags": [True, False, None]},
     "metadata": {}, "recorded_at": "2026-11-26T06:00:01.000001Z"},
]


def build(hash_alg: str) -> dict:
    genesis = Genesis("6a1f0c1e-5b7e-4c55-9a57-5d1c2b3e4f50", hash_alg, "2026-11-26T05:59:59.000000Z")
    hasher = genesis.hasher
    chain = genesis.chain_seed()
    tree = CompactRange(hasher)
    out = []
    for position, e in enumerate(ENTRIES, start=1):
        payload, metadata = canonical_json(e["payload"]), canonical_json(e["metadata"])
        data = entry_bytes(ledger_id=genesis.ledger_id, position=position, event_id=e["event_id"],
                           tenant_id=e["tenant_id"], stream_id=e["stream_id"], stream_version=e["stream_version"],
                           type=e["type"], schema_version=e["schema_version"], payload=payload, metadata=metadata,
                           recorded_at=e["recorded_at"])
        leaf = entry_hash(hasher, data)
        prev = chain
        chain = chain_link(hasher, prev, leaf)
        tree.append(leaf)
        out.append({"input": e, "position": position, "canonical_entry": data.decode("utf-8"),
                    "entry_hash": leaf.hex(), "prev_hash": prev.hex(), "chain_hash": chain.hex(),
                    "root_after": tree.root().hex()})
    return {"genesis": {"ledger_id": genesis.ledger_id, "hash_alg": hash_alg, "created_at": genesis.created_at,
                        "format": genesis.format, "canonical": genesis.canonical().decode(),
                        "chain_seed": genesis.chain_seed().hex()},
            "entries": out}


if __name__ == "__main__":
    vectors = {alg: build(alg) for alg in ("blake3", "sha256")}
    path = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "ledger-format.json"
    path.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
