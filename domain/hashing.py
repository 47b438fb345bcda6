"""Hash functions the ledger can be built on. Which one a ledger uses is fixed in its genesis."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import blake3

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
GENESIS_PREFIX = b"\x02"


class UnknownHashAlgorithm(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown hash algorithm {name!r}; expected one of {sorted(HASHERS)}")
        self.name = name


@dataclass(frozen=True)
class Hasher:
    """One 32-byte hash function with the RFC 6962 domain separation between leaves and nodes."""

    name: str
    digest: Callable[[bytes], bytes]
    size: int = 32

    def hash_leaf(self, data: bytes) -> bytes:
        return self.digest(LEAF_PREFIX + data)

    def hash_children(self, left: bytes, right: bytes) -> bytes:
        return self.digest(NODE_PREFIX + left + right)

    def empty_root(self) -> bytes:
        return self.digest(b"")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _blake3(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


sha256_hasher = Hasher("sha256", _sha256)
blake3_hasher = Hasher("blake3", _blake3)
HASHERS = {h.name: h for h in (sha256_hasher, blake3_hasher)}


def hasher_named(name: str) -> Hasher:
    try:
        return HASHERS[name]
    except KeyError:
        raise UnknownHashAlgorithm(name) from None
