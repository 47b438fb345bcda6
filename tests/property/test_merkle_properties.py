"""Merkle proofs from the real ledger verify for every size and index, and no corruption of one verifies.

Also: the tree pieces verification is built from (a frontier grown by whole subtrees, the table of a
segment's subtrees, a compact range rebuilt from stored nodes) agree with the plain RFC 6962 tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.postgres.ledger_store import PostgresLedger
from domain.frontier import Frontier
from domain.hashing import Hasher, blake3_hasher, sha256_hasher
from domain.ledger import NewEvent
from domain.merkle import (
    CompactRange,
    ProofError,
    complete_subtrees,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from domain.segment import SubtreeTable, stored_frontier
from tests.conftest import drop_database, make_database

COMMITS = [1, 2, 3, 5, 8, 13, 1, 4]  # 37 entries: two stored nodes of 16 leaves, one of 32


@dataclass
class Proven:
    ledger: PostgresLedger
    hasher: Hasher
    leaves: list[bytes]

    @property
    def size(self) -> int:
        return len(self.leaves)

    def root(self, size: int) -> bytes:
        return root_from_leaves(self.hasher, self.leaves[:size])


@pytest.fixture(scope="module")
def proven(server_url: str, template_db: str) -> Iterator[Proven]:
    db = make_database(server_url, template_db)
    try:
        with PostgresLedger(db.app_url) as ledger:
            for i, count in enumerate(COMMITS):
                ledger.append([NewEvent(f"s-{i}", "Thing", {"i": i, "j": j}) for j in range(count)])
            leaves = [e.entry_hash for e in ledger.read(limit=1000)]
            yield Proven(ledger, ledger.genesis().hasher, leaves)
    finally:
        drop_database(server_url, db.name)


def test_the_ledger_root_at_every_size_is_the_rfc_6962_root_of_its_entry_hashes(proven: Proven):
    for size in range(proven.size + 1):
        assert proven.ledger.root_at(size) == proven.root(size)


def test_every_inclusion_proof_the_ledger_builds_verifies(proven: Proven):
    for size in range(1, proven.size + 1):
        root = proven.root(size)
        for index in range(size):
            proof = proven.ledger.inclusion_proof(index + 1, size)
            verify_inclusion(proven.hasher, index, size, proven.leaves[index], proof, root)


def test_every_consistency_proof_the_ledger_builds_verifies(proven: Proven):
    for size2 in range(proven.size + 1):
        for size1 in range(size2 + 1):
            proof = proven.ledger.consistency_proof(size1, size2)
            verify_consistency(proven.hasher, size1, size2, proof, proven.root(size1), proven.root(size2))


def corrupt(proof: list[bytes], how: str, pick: int) -> list[bytes] | None:
    """The proof changed in one way, or None when that change is impossible (or changes nothing)."""
    proof = list(proof)
    if how == "flip a byte":
        if not proof:
            return None
        i = pick % len(proof)
        raw = bytearray(proof[i])
        raw[pick % 32] ^= 1 << (pick % 8)
        proof[i] = bytes(raw)
    elif how == "drop a hash":
        if not proof:
            return None
        del proof[pick % len(proof)]
    elif how == "add a hash":
        proof.insert(pick % (len(proof) + 1), bytes([pick % 256]) * 32)
    elif how == "reorder":
        if len(set(proof)) < 2:
            return None
        i = pick % len(proof)
        j = next(k for k in range(1, len(proof)) if proof[(i + k) % len(proof)] != proof[i])
        j = (i + j) % len(proof)
        proof[i], proof[j] = proof[j], proof[i]
    elif how == "truncate a hash":
        if not proof:
            return None
        i = pick % len(proof)
        proof[i] = proof[i][:-1]
    return proof


CORRUPTIONS = ["flip a byte", "drop a hash", "add a hash", "reorder", "truncate a hash"]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_no_corrupted_inclusion_proof_verifies(proven: Proven, data):
    size = data.draw(st.integers(1, proven.size), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = proven.ledger.inclusion_proof(index + 1, size)
    how = data.draw(st.sampled_from([*CORRUPTIONS, "wrong index", "wrong size"]), label="how")
    pick = data.draw(st.integers(0, 10**6), label="pick")
    claimed_index, claimed_size = index, size
    if how == "wrong index":
        if size == 1:
            return
        claimed_index = (index + 1 + pick % (size - 1)) % size
    elif how == "wrong size":
        claimed_size = data.draw(st.integers(1, proven.size).filter(lambda s: s != size and s > index), label="claimed")
    else:
        corrupted = corrupt(proof, how, pick)
        if corrupted is None:
            return
        proof = corrupted
    with pytest.raises(ProofError):
        verify_inclusion(
            proven.hasher, claimed_index, claimed_size, proven.leaves[index], proof, proven.root(claimed_size)
        )


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_no_corrupted_consistency_proof_verifies(proven: Proven, data):
    size2 = data.draw(st.integers(1, proven.size), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    proof = proven.ledger.consistency_proof(size1, size2)
    how = data.draw(st.sampled_from([*CORRUPTIONS, "wrong size1", "wrong size2"]), label="how")
    pick = data.draw(st.integers(0, 10**6), label="pick")
    claimed1, claimed2 = size1, size2
    if how == "wrong size1":
        claimed1 = data.draw(st.integers(1, size2).filter(lambda s: s != size1), label="claimed1") if size2 > 1 else None
    elif how == "wrong size2":
        claimed2 = data.draw(st.integers(size1, proven.size).filter(lambda s: s != size2), label="claimed2") if size1 < proven.size else None
    else:
        corrupted = corrupt(proof, how, pick)
        if corrupted is None:
            return
        proof = corrupted
    if claimed1 is None or claimed2 is None:
        return
    with pytest.raises(ProofError):
        verify_consistency(proven.hasher, claimed1, claimed2, proof, proven.root(claimed1), proven.root(claimed2))


# --- the pieces verification assembles the tree from -------------------------------------------------

hashers = st.sampled_from([blake3_hasher, sha256_hasher])


def leaves_of(hasher: Hasher, count: int) -> list[bytes]:
    return [hasher.hash_leaf(i.to_bytes(4, "big")) for i in range(count)]


@settings(max_examples=200, deadline=None)
@given(hasher=hashers, size=st.integers(0, 300), cuts=st.lists(st.integers(0, 300), max_size=6))
def test_a_frontier_grown_by_whole_subtrees_is_the_compact_range_grown_leaf_by_leaf(hasher, size, cuts):
    leaves = leaves_of(hasher, size)
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    frontier = Frontier(hasher)
    merged: list[tuple[int, int, bytes]] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        table = SubtreeTable(hasher, start, leaves[start:end])
        for level, digest in table.covering(start, end):
            frontier.append(level, digest, on_node=lambda lv, ix, h: merged.append((lv, ix, h)))
    compact = CompactRange(hasher)
    completed: dict[tuple[int, int], bytes] = {}
    for leaf in leaves:
        compact.append(leaf, lambda lv, ix, h: completed.__setitem__((lv, ix), h))
    assert frontier.size == size
    assert frontier.root() == compact.root() == root_from_leaves(hasher, leaves)
    assert frontier.to_bytes() == compact.to_bytes()
    for level, index, digest in merged:  # every node a merge reports is the tree's node there
        assert completed[(level, index)] == digest


@settings(max_examples=200, deadline=None)
@given(hasher=hashers, start=st.integers(0, 200), count=st.integers(0, 200))
def test_a_subtree_table_holds_exactly_the_aligned_subtrees_inside_its_leaves(hasher, start, count):
    leaves = leaves_of(hasher, start + count)
    table = SubtreeTable(hasher, start, leaves[start:])
    for level in range(9):
        width = 1 << level
        for index in range(-(-start // width), (start + count) // width):
            expected = root_from_leaves(hasher, leaves[index * width : (index + 1) * width])
            assert table.get(level, index) == expected
        assert table.get(level, (start // width) - 1) is None or start % width == 0
        assert table.get(level, (start + count) // width) is None


@settings(max_examples=100, deadline=None)
@given(hasher=hashers, size=st.integers(0, 300), min_level=st.integers(0, 6))
def test_the_compact_range_rebuilt_from_stored_nodes_and_leaves_hashes_to_the_root(hasher, size, min_level):
    leaves = leaves_of(hasher, size)
    table = SubtreeTable(hasher, 0, leaves)
    rebuilt = stored_frontier(hasher, size, min_level, table.get, dict(enumerate(leaves)))
    assert isinstance(rebuilt, Frontier)
    assert rebuilt.root() == root_from_leaves(hasher, leaves)
    assert [level for level, _ in rebuilt.nodes] == [w.bit_length() - 1 for _, w in complete_subtrees(0, size)]
