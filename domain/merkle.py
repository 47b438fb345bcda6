"""RFC 6962 / RFC 9162 Merkle trees: pure proof construction and verification.

The verifier (`verify_inclusion`, `verify_consistency`) follows RFC 9162 section 2.1.3 and
transparency-dev/merkle's proof/verify.go: no I/O, the hasher passed in, and a typed error that
carries what was expected and what was computed. Proof construction is expressed over a function
that returns the hash of an aligned complete subtree, so the storage adapter decides where those
hashes come from (stored nodes, or leaves hashed on the fly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain.hashing import Hasher


class ProofError(ValueError):
    """A proof that does not prove what it claims."""


class RootMismatch(ProofError):
    def __init__(self, expected: bytes, computed: bytes) -> None:
        super().__init__(f"root mismatch: expected {expected.hex()}, computed {computed.hex()}")
        self.expected = expected
        self.computed = computed


class ProofShapeError(ProofError):
    """Wrong number of proof hashes, hashes of the wrong size, or impossible indices."""


# --- verification --------------------------------------------------------------------------------


def verify_inclusion(
    hasher: Hasher, leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise unless `proof` shows `leaf_hash` at `leaf_index` in the tree of `tree_size` with `root`."""
    computed = root_from_inclusion_proof(hasher, leaf_index, tree_size, leaf_hash, proof)
    if computed != root:
        raise RootMismatch(root, computed)


def root_from_inclusion_proof(
    hasher: Hasher, leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    if leaf_index < 0 or tree_size < 0:
        raise ProofShapeError(f"negative index {leaf_index} or size {tree_size}")
    if leaf_index >= tree_size:
        raise ProofShapeError(f"leaf index {leaf_index} is beyond tree size {tree_size}")
    if len(leaf_hash) != hasher.size:
        raise ProofShapeError(f"leaf hash has {len(leaf_hash)} bytes, expected {hasher.size}")
    inner, border = _decompose_inclusion(leaf_index, tree_size)
    if len(proof) != inner + border:
        raise ProofShapeError(f"proof has {len(proof)} hashes, expected {inner + border}")
    _check_sizes(hasher, proof)
    node = _chain_inner(hasher, leaf_hash, proof[:inner], leaf_index)
    return _chain_border_right(hasher, node, proof[inner:])


def verify_consistency(
    hasher: Hasher, size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise unless `proof` shows the tree of `size1` with `root1` is a prefix of `size2` with `root2`."""
    if size1 < 0 or size2 < 0:
        raise ProofShapeError(f"negative tree size {size1} or {size2}")
    if size2 < size1:
        raise ProofShapeError(f"size2 {size2} is smaller than size1 {size1}")
    if size1 == size2:
        if proof:
            raise ProofShapeError(f"equal sizes need an empty proof, got {len(proof)} hashes")
        if root1 != root2:
            raise RootMismatch(root1, root2)
        return
    if size1 == 0:
        if proof:
            raise ProofShapeError(f"a proof from size 0 must be empty, got {len(proof)} hashes")
        return
    if not proof:
        raise ProofShapeError("empty consistency proof")
    _check_sizes(hasher, proof)

    inner, border = _decompose_inclusion(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros of size1
    inner -= shift
    # When size1 is a power of two its root is the first node of the path, not in the proof.
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        seed, start = proof[0], 1
    if len(proof) != start + inner + border:
        raise ProofShapeError(f"proof has {len(proof)} hashes, expected {start + inner + border}")
    path = proof[start:]
    mask = (size1 - 1) >> shift

    hash1 = _chain_inner_right(hasher, seed, path[:inner], mask)
    hash1 = _chain_border_right(hasher, hash1, path[inner:])
    if hash1 != root1:
        raise RootMismatch(root1, hash1)
    hash2 = _chain_inner(hasher, seed, path[:inner], mask)
    hash2 = _chain_border_right(hasher, hash2, path[inner:])
    if hash2 != root2:
        raise RootMismatch(root2, hash2)


def _check_sizes(hasher: Hasher, proof: Sequence[bytes]) -> None:
    for i, node in enumerate(proof):
        if len(node) != hasher.size:
            raise ProofShapeError(f"proof hash {i} has {len(node)} bytes, expected {hasher.size}")


def _decompose_inclusion(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(hasher: Hasher, seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, node in enumerate(proof):
        if (index >> i) & 1 == 0:
            seed = hasher.hash_children(seed, node)
        else:
            seed = hasher.hash_children(node, seed)
    return seed


def _chain_inner_right(hasher: Hasher, seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, node in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = hasher.hash_children(node, seed)
    return seed


def _chain_border_right(hasher: Hasher, seed: bytes, proof: Sequence[bytes]) -> bytes:
    for node in proof:
        seed = hasher.hash_children(node, seed)
    return seed


# --- construction --------------------------------------------------------------------------------

SubtreeHash = Callable[[int, int], bytes]
"""subtree_hash(start, size) for an aligned complete subtree: size a power of two, start % size == 0."""


def complete_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The aligned complete subtrees (start, size), left to right, whose leaves are exactly [start, end)."""
    out: list[tuple[int, int]] = []
    while start < end:
        size = start & -start if start else 1 << (end - 1).bit_length()
        while start + size > end:
            size >>= 1
        out.append((start, size))
        start += size
    return out


def range_hash(hasher: Hasher, start: int, end: int, subtree_hash: SubtreeHash) -> bytes:
    """MTH of leaves [start, end) where [start, end) is a node of some RFC 6962 tree (left-aligned)."""
    parts = [subtree_hash(s, n) for s, n in complete_subtrees(start, end)]
    node = parts[-1]
    for part in reversed(parts[:-1]):
        node = hasher.hash_children(part, node)
    return node


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes, bottom-up, make the inclusion proof of `index` in a tree of `size`."""
    if not 0 <= index < size:
        raise ProofShapeError(f"leaf index {index} is outside tree size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    return list(reversed(ranges))


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes make the RFC 6962 consistency proof from size1 to size2."""
    if not 0 <= size1 <= size2:
        raise ProofShapeError(f"cannot prove consistency from size {size1} to size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    return _subproof(size1, 0, size2, True)


def _subproof(m: int, lo: int, hi: int, complete: bool) -> list[tuple[int, int]]:
    n = hi - lo
    if m == n:
        return [] if complete else [(lo, hi)]
    k = _split(n)
    if m <= k:
        return _subproof(m, lo, lo + k, complete) + [(lo + k, hi)]
    return _subproof(m - k, lo + k, hi, False) + [(lo, lo + k)]


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(hasher: Hasher, leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash of entry hashes used directly as leaves (the ledger's leaves are entry hashes)."""
    if not leaves:
        return hasher.empty_root()
    return range_hash(hasher, 0, len(leaves), lambda s, n: _perfect(hasher, leaves[s : s + n]))


def _perfect(hasher: Hasher, level: Sequence[bytes]) -> bytes:
    nodes = list(level)
    while len(nodes) > 1:
        nodes = [hasher.hash_children(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
    return nodes[0]


# --- the compact range: the tree's right frontier, enough to append and to compute the root --------


class CompactRange:
    """Roots of the perfect subtrees that make up a tree of `size` leaves, largest first.

    Appending a leaf merges equal-sized subtrees like a binary counter; every merge completes one
    aligned subtree, reported to `on_complete(level, index, hash)` so that a store can keep it.
    """

    __slots__ = ("hasher", "size", "roots")

    def __init__(self, hasher: Hasher, size: int = 0, roots: Sequence[bytes] = ()) -> None:
        if len(roots) != bin(size).count("1"):
            raise ProofShapeError(f"a compact range of size {size} needs {bin(size).count('1')} roots")
        self.hasher = hasher
        self.size = size
        self.roots = list(roots)

    def append(self, leaf: bytes, on_complete: Callable[[int, int, bytes], None] | None = None) -> None:
        node = leaf
        level = 0
        index = self.size
        while (index >> level) & 1:
            node = self.hasher.hash_children(self.roots.pop(), node)
            level += 1
            if on_complete is not None:
                on_complete(level, index >> level, node)
        self.roots.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.roots:
            return self.hasher.empty_root()
        node = self.roots[-1]
        for left in reversed(self.roots[:-1]):
            node = self.hasher.hash_children(left, node)
        return node

    def to_bytes(self) -> bytes:
        return b"".join(self.roots)

    @classmethod
    def from_bytes(cls, hasher: Hasher, size: int, data: bytes) -> CompactRange:
        width = hasher.size
        return cls(hasher, size, [data[i : i + width] for i in range(0, len(data), width)])
