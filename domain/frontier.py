"""The right edge of an RFC 6962 tree, grown by whole aligned subtrees rather than single leaves.

domain.merkle.CompactRange appends one leaf at a time. Verification works on runs of thousands of
entries whose inner nodes it has already computed, so here a whole aligned subtree can be appended
in one step, and a merge may take its hash from a table of known nodes instead of hashing again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain.hashing import Hasher
from domain.merkle import ProofShapeError, complete_subtrees

NodeSink = Callable[[int, int, bytes], None]
"""on_node(level, index, hash): told about every node a merge completes."""

KnownNode = Callable[[int, int], "bytes | None"]
"""known(level, index): the hash of a node if it is already known, else None (then it is hashed)."""


class Frontier:
    """Roots of the perfect subtrees that make up a tree of `size` leaves, as (level, hash), largest first."""

    __slots__ = ("hasher", "size", "nodes")

    def __init__(self, hasher: Hasher, size: int = 0, nodes: Sequence[tuple[int, bytes]] = ()) -> None:
        levels = [level for level, _ in nodes]
        if levels != [s.bit_length() - 1 for _, s in complete_subtrees(0, size)]:
            raise ProofShapeError(f"a tree of size {size} has no perfect subtrees of levels {levels}")
        self.hasher = hasher
        self.size = size
        self.nodes = list(nodes)

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
            digest = merged if merged is not None else self.hasher.hash_children(left, digest)
            if on_node is not None:
                on_node(level, index, digest)
        nodes.append((level, digest))

    def root(self) -> bytes:
        nodes = self.nodes
        if not nodes:
            return self.hasher.empty_root()
        hash_children = self.hasher.hash_children
        digest = nodes[-1][1]
        for i in range(len(nodes) - 2, -1, -1):
            digest = hash_children(nodes[i][1], digest)
        return digest

    def to_bytes(self) -> bytes:
        """The compact range as ledger.heads stores it: subtree roots, largest first, concatenated."""
        return b"".join(digest for _, digest in self.nodes)
