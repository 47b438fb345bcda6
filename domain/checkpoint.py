"""Signed checkpoints: a ledger's tree head, signed with Ed25519 so anyone can check it offline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.canonical import canonical_json


class CheckpointSignatureInvalid(ValueError):
    def __init__(self, tree_size: int, key_id: str) -> None:
        super().__init__(f"checkpoint at tree size {tree_size}: signature does not verify with key {key_id}")
        self.tree_size = tree_size
        self.key_id = key_id


def key_id_for(public_key: bytes) -> str:
    """A short, stable name for an Ed25519 public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    ledger_id: str
    hash_alg: str
    tree_size: int
    root: bytes
    chain_head: bytes
    signed_at: str
    key_id: str
    signature: bytes = b""

    def message(self) -> bytes:
        """The exact bytes that are signed: RFC 8785 JSON with hashes in lowercase hex."""
        return canonical_json(
            {
                "chain_head": self.chain_head.hex(),
                "hash_alg": self.hash_alg,
                "key_id": self.key_id,
                "ledger_id": self.ledger_id,
                "root": self.root.hex(),
                "signed_at": self.signed_at,
                "tree_size": self.tree_size,
                "type": "nexus-checkpoint/v1",
            }
        )

    def verify(self, public_key: bytes) -> None:
        if key_id_for(public_key) != self.key_id:
            raise CheckpointSignatureInvalid(self.tree_size, self.key_id)
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(self.signature, self.message())
        except (InvalidSignature, ValueError):
            raise CheckpointSignatureInvalid(self.tree_size, self.key_id) from None

    def to_json(self) -> dict[str, object]:
        return {
            "ledger_id": self.ledger_id,
            "hash_alg": self.hash_alg,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "chain_head": self.chain_head.hex(),
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Checkpoint:
        return cls(
            ledger_id=str(data["ledger_id"]),
            hash_alg=str(data["hash_alg"]),
            tree_size=int(data["tree_size"]),  # type: ignore[arg-type]
            root=bytes.fromhex(str(data["root"])),
            chain_head=bytes.fromhex(str(data["chain_head"])),
            signed_at=str(data["signed_at"]),
            key_id=str(data["key_id"]),
            signature=bytes.fromhex(str(data["signature"])),
        )
