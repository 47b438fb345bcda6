"""GET /v1/receipts/{event_id}: an entry, its inclusion proof and a signed checkpoint that covers it.

Everything a verifier needs offline: recompute the entry hash from the canonical fields
(domain.entry), check the proof against the checkpoint's root (domain.merkle.verify_inclusion) and
the checkpoint's signature with the public key (domain.checkpoint.Checkpoint.verify). Tenant-scoped:
another tenant's event id is answered exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request

from api.errors import ApiError
from api.gateway.common import ReaderPrincipal

router = APIRouter()


def _not_found(event_id: str) -> ApiError:
    return ApiError(404, f"no receipt {event_id!r} for this tenant", "not_found_error", "receipt_not_found")


@router.get("/v1/receipts/{event_id}")
def get_receipt(event_id: str, request: Request, principal: ReaderPrincipal) -> dict[str, Any]:
    container = request.app.state.container
    try:
        wanted = uuid.UUID(event_id)
    except ValueError:
        raise _not_found(event_id) from None
    found = container.ledger.find([wanted])
    if not found or found[0].tenant_id != principal.tenant_id:
        raise _not_found(event_id)
    event = found[0]
    checkpoint = container.checkpoints.latest()
    if checkpoint is None or checkpoint.tree_size < event.position:
        checkpoint = container.signer.sign_now()
    proof = container.ledger.inclusion_proof(event.position, checkpoint.tree_size)
    genesis = container.ledger.genesis()
    return {
        "ledger": {"ledger_id": genesis.ledger_id, "hash_alg": genesis.hash_alg},
        "entry": {
            "position": event.position, "event_id": str(event.event_id), "tenant_id": event.tenant_id,
            "stream_id": event.stream_id, "stream_version": event.stream_version, "type": event.type,
            "schema_version": event.schema_version, "payload": orjson.loads(event.payload),
            "metadata": orjson.loads(event.metadata), "recorded_at": event.recorded_at,
        },
        "entry_hash": event.entry_hash.hex(),
        "prev_hash": event.prev_hash.hex(),
        "chain_hash": event.chain_hash.hex(),
        "inclusion_proof": {"leaf_index": event.position - 1, "tree_size": checkpoint.tree_size,
                            "hashes": [h.hex() for h in proof]},
        "checkpoint": checkpoint.to_json(),
        "public_key": {"key_id": checkpoint.key_id, "algorithm": "ed25519",
                       "public_key": container.checkpoints.public_keys()[checkpoint.key_id].hex()},
    }
