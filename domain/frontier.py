"""The right edge of an RFC 6962 tree, grown by whole aligned subtrees rather than single leaves.

domain.merkle.CompactRange appends one leaf at a time. Verification works on runs of thousands of
entries whose inner nodes it has already computed, so here a whole aligned subtree can be appended
in one step, and a merge may take its hash from a table of known nodes instead of hashing again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

import blake3

from domain.hashing import NODE_PREFIX, Hasher
from domain.merkle import ProofShapeError, complete_subtrees

NodeSink = Callable[[int, int, bytes], None]
"""on_node(level, index, hash): told about every node a merge completes."""

KnownNode = Callable[[int, int], "bytes | None"]
"""known(level, index): the hash of a node if it is already known, else None (then it is hashed)."""


class _Hashed(Protocol):
    def digest(self) -> bytes: ...


# The constructors behind domain.hashing's hashers, for hot loops: new(data).digest() is two calls
# where Hasher.digest(data) is four, which is a tenth of verification's time per entry.
_CONSTRUCTORS: dict[str, Callable[[bytes], _Hashed]] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}


def hash_constructor(hasher: Hasher) -> Callable[[bytes], _Hashed]:
    """A callable whose result's .digest() is hasher.digest(data)."""
    new = _CONSTRUCTORS.get(hasher.name)
    if new is not None and new(b"check").digest() == hasher.digest(b"check"):
        return new
    return lambda data: _Done(hasher.digest(data))


class _Done:
    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def digest(self) -> bytes:
        return self.value


class Frontier:
    """Roots of the perfect subtrees that make up a tree of `size` leaves, as (level, hash), largest first."""

    __slots__ = ("hasher", "size", "nodes", "_new")

    def __init__(self, hasher: Hasher, size: int = 0, nodes: Sequence[tuple[int, bytes]] = ()) -> None:
        levels = [level for level, _ in nodes]
        if levels != [s.bit_length() - 1 for _, s in complete_subtrees(0, size)]:
            raise ProofShapeError(f"a tree of size {size} has no perfect subtrees of levels {levels}")
        self.hasher = hasher
        self.size = size
        self.nodes = list(nodes)
        self._new = hash_constructor(hasher)

    @classmethod
    def from_hashes(cls, hasher: Hasher, size: int, hashes: Sequence[bytes]) -> Frontier:
        """From the subtree roots alone (a stored compact range): their levels follow from the size."""
        levels = [s.bit_length() - 1 for _, s in complete_subtrees(0, size)]
        if len(levels) != len(hashes):
            raise ProofShapeError(f"a tree of size {size} has {len(levels)} perfect subtrees, got {len(hashes)} hashes")
        return cls(hasher, size, list(zip(levels, hashes, strict=True)))

    def copy(self) -> Frontier:
        clone = Frontier.__new__(Frontier)
        clone.hasher = self.hasher
        clone.size = self.size
        clone.nodes = list(self.nodes)
        clone._new = self._new
        return clone

    def append(self, level: int, digest: bytes, on_node: NodeSink | None = None, known: KnownNode | None = None) -> None:
        """Append the perfect subtree of 2**level leaves starting at `size` (which it must be aligned to)."""
        if self.size & ((1 << level) - 1):
            raise ProofShapeError(f"a subtree of level {level} cannot start at leaf {self.size}")
        self.size += 1 << level
        nodes = self.nodes
        while nodes and nodes[-1][0] == level:
            _, left = nodes.pop()
            level += 1
            index = (self.size >> level) - 1
            merged = known(level, index) if known is not None else None
            digest = merged if merged is not None else self._new(NODE_PREFIX + left + digest).digest()
            if on_node is not None:
                on_node(level, index, digest)
        nodes.append((level, digest))

    def root(self) -> bytes:
        nodes = self.nodes
        if not nodes:
            return self.hasher.empty_root()
        new, node = self._new, NODE_PREFIX
        digest = nodes[-1][1]
        for i in range(len(nodes) - 2, -1, -1):
            digest = new(node + nodes[i][1] + digest).digest()
        return digest

    def to_bytes(self) -> bytes:
        """The compact range as ledger.heads stores it: subtree roots, largest first, concatenated."""
        return b"".join([digest for _, digest in self.nodes])
