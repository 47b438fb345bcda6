"""Walk a ledger from genesis and name the first position where it is not what it claims to be."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from domain.entry import Genesis, chain_link, entry_bytes, entry_hash
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


@dataclass(frozen=True)
class Fault:
    position: int
    kind: FaultKind
    detail: str

    def __str__(self) -> str:
        return f"position {self.position}: {self.kind.value}: {self.detail}"


@dataclass(frozen=True)
class TreeHead:
    """A recorded (size, root, chain head) the walk must reproduce: a stored head or a signed checkpoint."""

    size: int
    root: bytes
    chain_head: bytes


@dataclass(frozen=True)
class VerifiedLedger:
    size: int
    root: bytes
    chain_head: bytes


class LedgerVerificationFailed(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__(str(fault))
        self.fault = fault


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
        expected_position = self.size + 1
        if row.position != expected_position:
            kind = FaultKind.POSITION_MISSING if row.position > expected_position else FaultKind.ORDER_CHANGED
            raise LedgerVerificationFailed(
                Fault(expected_position, kind, f"expected position {expected_position}, found {row.position}")
            )
        recomputed = entry_hash(
            self.hasher,
            entry_bytes(
                ledger_id=self._ledger_id,
                position=row.position,
                event_id=str(row.event_id),
                tenant_id=row.tenant_id,
                stream_id=row.stream_id,
                stream_version=row.stream_version,
                type=row.type,
                schema_version=row.schema_version,
                payload=row.payload,
                metadata=row.metadata,
                recorded_at=row.recorded_at,
            ),
        )
        content_ok = recomputed == row.entry_hash
        link_ok = row.prev_hash == self.chain
        if not content_ok and not link_ok:
            raise LedgerVerificationFailed(
                Fault(row.position, FaultKind.ORDER_CHANGED, "neither the content nor the back link belong here")
            )
        if not content_ok:
            raise LedgerVerificationFailed(
                Fault(
                    row.position,
                    FaultKind.CONTENT_CHANGED,
                    f"stored entry hash {row.entry_hash.hex()}, recomputed {recomputed.hex()}",
                )
            )
        if not link_ok:
            raise LedgerVerificationFailed(
                Fault(row.position, FaultKind.LINK_BROKEN, f"back link {row.prev_hash.hex()}, expected {self.chain.hex()}")
            )
        chain = chain_link(self.hasher, self.chain, recomputed)
        if chain != row.chain_hash:
            raise LedgerVerificationFailed(
                Fault(row.position, FaultKind.LINK_BROKEN, f"stored chain hash {row.chain_hash.hex()}, recomputed {chain.hex()}")
            )
        self.chain = chain
        self.tree.append(recomputed)
        self.size = row.position
        head = self.heads.get(self.size)
        if head is not None:
            self._check_head(head)

    def _check_head(self, head: TreeHead) -> None:
        root = self.tree.root()
        if root != head.root or self.chain != head.chain_head:
            raise LedgerVerificationFailed(
                Fault(
                    self.size,
                    FaultKind.ROOT_MISMATCH,
                    f"head at size {head.size} records root {head.root.hex()}, recomputed {root.hex()}",
                )
            )

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
