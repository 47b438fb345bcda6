"""Walk a ledger from genesis and name the first position where it is not what it claims to be.

This module holds the vocabulary of verification (what can be wrong, and where) and the precise,
row-at-a-time check of one entry. `ChainWalker` is the simple reference walk; domain.segment is the
fast walk that `nexus ledger verify` uses, and it falls back on `check_entry` below whenever its fast
path does not accept a row, so both always agree on what is wrong and where.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from domain.entry import Genesis, chain_link, entry_hash, recorded_entry_bytes
from domain.hashing import Hasher
from domain.ledger import RecordedEvent
from domain.merkle import CompactRange


class FaultKind(enum.StrEnum):
    CONTENT_CHANGED = "content changed"
    LINK_BROKEN = "link broken"
    POSITION_MISSING = "position missing"
    ORDER_CHANGED = "order changed"
    ROOT_MISMATCH = "tree root differs from a recorded tree head"
    BEYOND_HEAD = "entry beyond the last recorded tree head"
    HEAD_MISSING_ENTRIES = "tree head covers entries that are missing"
    NODE_MISMATCH = "stored merkle node differs from the recomputed tree"
    NODE_MISSING = "stored merkle node is missing"
    NODE_UNEXPECTED = "stored merkle node that the tree does not have"
    CHECKPOINT_MISMATCH = "signed checkpoint differs from the recomputed tree"
    SIGNATURE_INVALID = "checkpoint signature does not verify"
    GENESIS_CHANGED = "genesis record changed"
    UNTRUSTED = "no checkpoint is signed by a trusted key"


# When two faults name the same position, the one a sequential walk meets first is reported: the row
# itself, then the Merkle nodes completed by it, then the heads and checkpoints recorded at its size;
# a checkpoint that is not authentic is named as such before what it claims is compared.
_RANK = {
    FaultKind.GENESIS_CHANGED: 0,
    FaultKind.POSITION_MISSING: 1,
    FaultKind.ORDER_CHANGED: 1,
    FaultKind.CONTENT_CHANGED: 1,
    FaultKind.LINK_BROKEN: 1,
    FaultKind.NODE_MISMATCH: 2,
    FaultKind.NODE_MISSING: 2,
    FaultKind.NODE_UNEXPECTED: 2,
    FaultKind.ROOT_MISMATCH: 3,
    FaultKind.HEAD_MISSING_ENTRIES: 3,
    FaultKind.BEYOND_HEAD: 3,
    FaultKind.SIGNATURE_INVALID: 4,
    FaultKind.CHECKPOINT_MISMATCH: 5,
    FaultKind.UNTRUSTED: 6,
}


@dataclass(frozen=True)
class Fault:
    """What is wrong and where. Position 0 is the ledger itself (its genesis, its keys)."""

    position: int
    kind: FaultKind
    detail: str

    def __str__(self) -> str:
        where = f"position {self.position}" if self.position > 0 else "ledger"
        return f"{where}: {self.kind.value}: {self.detail}"

    def sort_key(self) -> tuple[int, int]:
        return (self.position, _RANK[self.kind])


def first_fault(faults: Iterable[Fault | None]) -> Fault | None:
    """The fault a sequential walk from genesis would meet first."""
    found = [f for f in faults if f is not None]
    return min(found, key=Fault.sort_key) if found else None


@dataclass(frozen=True)
class TreeHead:
    """A recorded (size, root, chain head) the walk must reproduce: a stored head or a signed checkpoint.

    `frontier`, when known, is the compact range stored with the head (the roots of its perfect
    subtrees, largest first, concatenated): the next append continues from it, so it is checked too.
    """

    size: int
    root: bytes
    chain_head: bytes
    frontier: bytes | None = None


@dataclass(frozen=True)
class VerifiedLedger:
    size: int
    root: bytes
    chain_head: bytes


class LedgerVerificationFailed(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__(str(fault))
        self.fault = fault


def check_entry(
    hasher: Hasher, ledger_id: str, expected_position: int, chain: bytes, row: RecordedEvent
) -> tuple[bytes, bytes] | Fault:
    """Check one row against the chain so far; returns (entry hash, chain hash) or the fault it shows.

    When neither the content nor the back link fit, the row most likely belongs elsewhere (rows
    swapped, or renumbered), which is why that case is named as an order change.
    """
    if row.position != expected_position:
        kind = FaultKind.POSITION_MISSING if row.position > expected_position else FaultKind.ORDER_CHANGED
        return Fault(expected_position, kind, f"expected position {expected_position}, found {row.position}")
    recomputed = entry_hash(hasher, recorded_entry_bytes(ledger_id, row))
    content_ok = recomputed == row.entry_hash
    link_ok = row.prev_hash == chain
    if not content_ok and not link_ok:
        return Fault(row.position, FaultKind.ORDER_CHANGED, "neither the content nor the back link belong here")
    if not content_ok:
        return Fault(
            row.position,
            FaultKind.CONTENT_CHANGED,
            f"stored entry hash {row.entry_hash.hex()}, recomputed {recomputed.hex()}",
        )
    if not link_ok:
        return Fault(row.position, FaultKind.LINK_BROKEN, f"back link {row.prev_hash.hex()}, expected {chain.hex()}")
    linked = chain_link(hasher, chain, recomputed)
    if linked != row.chain_hash:
        return Fault(
            row.position, FaultKind.LINK_BROKEN, f"stored chain hash {row.chain_hash.hex()}, recomputed {linked.hex()}"
        )
    return recomputed, linked


def check_head(head: TreeHead, root: bytes, chain: bytes, frontier: bytes, kind: FaultKind) -> Fault | None:
    """Compare a recorded head (or checkpoint, with kind CHECKPOINT_MISMATCH) with the recomputed tree."""
    if head.root != root:
        return Fault(head.size, kind, f"records root {head.root.hex()} at size {head.size}, recomputed {root.hex()}")
    if head.chain_head != chain:
        return Fault(
            head.size, kind, f"records chain head {head.chain_head.hex()} at size {head.size}, recomputed {chain.hex()}"
        )
    if head.frontier is not None and head.frontier != frontier:
        return Fault(
            head.size, kind, f"records compact range {head.frontier.hex()} at size {head.size}, recomputed {frontier.hex()}"
        )
    return None


class ChainWalker:
    """Feeds on rows in position order; raises LedgerVerificationFailed at the first fault.

    Starts from genesis, or from a trusted (size, chain head, compact range) to verify a suffix.
    """

    def __init__(
        self,
        genesis: Genesis,
        heads: Mapping[int, TreeHead] | None = None,
        start_size: int = 0,
        start_chain: bytes | None = None,
        start_range: CompactRange | None = None,
    ) -> None:
        self.genesis = genesis
        self.hasher = genesis.hasher
        self.heads = dict(heads or {})
        self.size = start_size
        self.chain = start_chain if start_chain is not None else genesis.chain_seed()
        self.tree = start_range or CompactRange(self.hasher)
        self._ledger_id = genesis.ledger_id

    def feed(self, row: RecordedEvent) -> None:
        checked = check_entry(self.hasher, self._ledger_id, self.size + 1, self.chain, row)
        if isinstance(checked, Fault):
            raise LedgerVerificationFailed(checked)
        recomputed, self.chain = checked
        self.tree.append(recomputed)
        self.size = row.position
        head = self.heads.get(self.size)
        if head is not None:
            self._check_head(head)

    def _check_head(self, head: TreeHead) -> None:
        fault = check_head(head, self.tree.root(), self.chain, self.tree.to_bytes(), FaultKind.ROOT_MISMATCH)
        if fault is not None:
            raise LedgerVerificationFailed(fault)

    def finish(self) -> VerifiedLedger:
        """Call after the last row: checks that every recorded head is covered and nothing lies past the last."""
        if self.heads:
            last = max(self.heads)
            if last > self.size:
                raise LedgerVerificationFailed(
                    Fault(self.size + 1, FaultKind.HEAD_MISSING_ENTRIES, f"a tree head records size {last}, the ledger ends at {self.size}")
                )
            if self.size > last:
                raise LedgerVerificationFailed(
                    Fault(last + 1, FaultKind.BEYOND_HEAD, f"entries run to {self.size}, the last recorded tree head is {last}")
                )
        return VerifiedLedger(self.size, self.tree.root(), self.chain)


def verify_rows(genesis: Genesis, rows: Iterable[RecordedEvent], heads: Iterable[TreeHead] = ()) -> VerifiedLedger:
    walker = ChainWalker(genesis, {h.size: h for h in heads})
    for row in rows:
        walker.feed(row)
    return walker.finish()
