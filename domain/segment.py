"""Verify a run of consecutive ledger positions quickly: the hot loop of `nexus ledger verify`.

A ledger is verified as a sequence of segments (runs of positions). Each segment is walked on its
own, starting from the chain hash and tree frontier stored just before it, so segments can be walked
in parallel; `TreeAssembler` then joins their trees in order and checks the nodes that span them.

The fast path reads *records*, one bytes-like object per entry (bytes, or a memoryview of the
buffer the store's rows arrived in), in position order:

    prev_hash (32 bytes) | entry_hash (32) | chain_hash (32) | 0x00 | the entry's canonical JSON

where the canonical JSON is rendered by the store from the entry's columns
(adapters/postgres/ledger_reader.py says how, and why that rendering is injective). A record is
accepted when H(0x00 || rendered entry) is the stored entry hash, the stored back link is the chain
hash so far, and H(0x01 || chain || entry hash) is the stored chain hash. As the writer hashed the
canonical JSON of the original columns, and the rendering decodes to exactly the columns it was
rendered from, acceptance means the columns are the original ones; and as each accepted record
links to the one before, the accepted rows are exactly the positions after the segment's start, in
order (which is why positions need no separate check). Anything else (a mismatch, or a record that
is not even 97 bytes long because a hash column has the wrong length) goes to the precise path,
domain.verify.check_entry, which recomputes the entry from decoded columns and names the fault.
The fast path never accepts a row the precise path would reject; the fault reported is always the
precise path's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from domain.entry import Genesis
from domain.frontier import Frontier, hash_constructor
from domain.hashing import NODE_PREFIX, Hasher
from domain.ledger import RecordedEvent
from domain.merkle import complete_subtrees
from domain.verify import Fault, FaultKind, TreeHead, check_entry, check_head, first_fault

HASHES = 96
"""Length of the stored (prev_hash, entry_hash, chain_hash) at the start of a record."""

Record = bytes | memoryview


class SegmentWalker:
    """Walks the entries after `start` in order, from the chain hash at `start`; stops at the first fault.

    `watch` lists sizes (heads, checkpoints) whose chain hash the caller will need: it is kept in
    `chains_at`. The recomputed entry hashes, the tree's leaves, collect in `leaves`.
    """

    def __init__(self, genesis: Genesis, start: int, chain: bytes, watch: Iterable[int] = ()) -> None:
        self.hasher = genesis.hasher
        self.ledger_id = genesis.ledger_id
        self.start = start
        self.position = start
        self.chain = chain
        self.leaves: list[bytes] = []
        self.fault: Fault | None = None
        self.chains_at: dict[int, bytes] = {}
        self.precise = 0  # rows the fast path handed to the precise path
        self._watch = sorted({size for size in watch if size > start}, reverse=True)
        self._new = hash_constructor(self.hasher)

    def feed_records(self, records: Sequence[Record]) -> int:
        """Accept records while the fast path can; returns how many it accepted (a prefix of `records`).

        Written for speed, as it runs once per entry: locals instead of attributes, one comparison
        for the three stored hashes, slices that copy nothing when the records are memoryviews.
        """
        new, node = self._new, NODE_PREFIX
        chain = self.chain
        append = self.leaves.append
        watch = self._watch
        base = self.position
        next_watch = watch[-1] - base if watch else -1  # counted in records accepted by this call
        accepted = 0
        for record in records:
            leaf = new(record[HASHES:]).digest()
            linked = new(node + chain + leaf).digest()
            if record[:HASHES] != chain + leaf + linked:
                break
            chain = linked
            append(leaf)
            accepted += 1
            if accepted == next_watch:
                self.chains_at[base + accepted] = chain
                watch.pop()
                next_watch = watch[-1] - base if watch else -1
        self.position = base + accepted
        self.chain = chain
        return accepted

    def feed_entry(self, row: RecordedEvent) -> bool:
        """The precise path: check one row; on a fault, keep it and return False."""
        self.precise += 1
        checked = check_entry(self.hasher, self.ledger_id, self.position + 1, self.chain, row)
        if isinstance(checked, Fault):
            self.fault = checked
            return False
        leaf, self.chain = checked
        self.leaves.append(leaf)
        self.position += 1
        if self._watch and self._watch[-1] == self.position:
            self.chains_at[self.position] = self.chain
            self._watch.pop()
        return True


class SubtreeTable:
    """The hash of every perfect, aligned subtree lying wholly inside leaves [start, start + len(leaves))."""

    def __init__(self, hasher: Hasher, start: int, leaves: list[bytes]) -> None:
        self.start = start
        self.end = start + len(leaves)
        self.levels: list[tuple[int, list[bytes]]] = [(start, leaves)]  # (index of the first node, hashes)
        new, node = hash_constructor(hasher), NODE_PREFIX
        base, row = start, leaves
        while True:
            skip = base & 1  # a left child whose right sibling lies beyond the start has no parent here
            # zip stops at the last complete pair: an odd last node waits for its sibling's segment.
            pairs = zip(row[skip::2], row[skip + 1 :: 2], strict=False)
            parents = [new(node + left + right).digest() for left, right in pairs]
            if not parents:
                break
            base = (base + skip) >> 1
            row = parents
            self.levels.append((base, row))

    def get(self, level: int, index: int) -> bytes | None:
        if level >= len(self.levels):
            return None
        base, row = self.levels[level]
        i = index - base
        return row[i] if 0 <= i < len(row) else None

    def covering(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """The (level, hash) of the aligned subtrees that tile [start, end), left to right."""
        out = []
        for first, size in complete_subtrees(start, end):
            level = size.bit_length() - 1
            digest = self.get(level, first >> level)
            if digest is None:
                raise ValueError(f"leaves [{first}, {first + size}) are not inside [{self.start}, {self.end})")
            out.append((level, digest))
        return out

    def node_ranges(self, min_level: int) -> list[tuple[int, int, int]]:
        """(level, first index, end index) of the nodes at min_level and above: the ones the store keeps."""
        return [(level, base, base + len(row)) for level, (base, row) in enumerate(self.levels) if level >= min_level and row]


def nodes_match(table: SubtreeTable, stored: Mapping[int, tuple[int, int, bytes]], min_level: int) -> bool:
    """Whether the store holds exactly the table's nodes from min_level up, given per level as
    (first index, number of 32-byte hashes, the hashes joined in index order): one comparison a level."""
    for level, (base, row) in enumerate(table.levels):
        if level < min_level or not row:
            continue
        if stored.get(level) != (base, len(row), b"".join(row)):
            return False
    return True


def compare_nodes(table: SubtreeTable, stored: Mapping[tuple[int, int], bytes], min_level: int) -> Fault | None:
    """The first stored node (by the position that completes it) that is missing or differs from the table."""
    faults = []
    for level, (base, row) in enumerate(table.levels):
        if level < min_level:
            continue
        for i, digest in enumerate(row):
            fault = node_fault(level, base + i, digest, stored.get((level, base + i)))
            if fault is not None:
                faults.append(fault)
                break
    return first_fault(faults)


def node_fault(level: int, index: int, recomputed: bytes, stored: bytes | None) -> Fault | None:
    """A stored Merkle node is named by the position of the last leaf it covers: the walk completes it there."""
    position = (index + 1) << level
    span = f"node (level {level}, index {index}) over positions {(index << level) + 1}..{position}"
    if stored is None:
        return Fault(position, FaultKind.NODE_MISSING, f"{span} is not stored")
    if stored != recomputed:
        return Fault(position, FaultKind.NODE_MISMATCH, f"{span} stored {stored.hex()}, recomputed {recomputed.hex()}")
    return None


@dataclass(frozen=True)
class Expectation:
    """A head or signed checkpoint to compare with the tree at its size; `kind` names its mismatch."""

    head: TreeHead
    kind: FaultKind


def check_heads(
    table: SubtreeTable, start: Frontier, chains_at: Mapping[int, bytes], expected: Iterable[Expectation]
) -> Fault | None:
    """Compare each expectation (sizes inside the table) with the tree grown from `start` by the table.

    The frontier is grown from head to head in size order; merges inside the table look their hash
    up instead of hashing again, so dense heads (one per entry) cost little more than their roots.
    """
    frontier = start.copy()
    known = table.get
    for item in sorted(expected, key=lambda e: e.head.size):
        size = item.head.size
        if size == frontier.size + 1:  # one leaf on: the common case when every commit is one entry
            frontier.append(0, table.levels[0][1][size - 1 - table.start], known=known)
        else:
            for level, digest in table.covering(frontier.size, size):
                frontier.append(level, digest, known=known)
        fault = check_head(item.head, frontier.root(), chains_at[size], frontier.to_bytes(), item.kind)
        if fault is not None:
            return fault
    return None


@dataclass
class SegmentResult:
    """What one segment contributes: the leaves after `start` it verified, and the first fault it found.

    `subtrees` tile [start, end) and are what the assembler appends; `seed` and `start_frontier` are
    the stored chain hash and compact range the segment started from, which the assembler checks
    against what it recomputed for the segments before.
    """

    start: int
    end: int
    seed: bytes
    last_chain: bytes
    start_frontier: list[tuple[int, bytes]]
    subtrees: list[tuple[int, bytes]]
    fault: Fault | None
    at_end_of_ledger: bool
    heads_checked: int = 0
    checkpoints_checked: int = 0
    trusted_checkpoints: int = 0
    nodes_checked: int = 0
    precise_rows: int = 0  # rows the fast path handed to the precise path (0 on a sound ledger)


class TreeAssembler:
    """Joins segment results, in order, into one tree and chain; reports what spans segments."""

    def __init__(self, frontier: Frontier, chain: bytes, min_level: int) -> None:
        self.frontier = frontier
        self.chain = chain
        self.min_level = min_level

    @property
    def size(self) -> int:
        return self.frontier.size

    def add(self, result: SegmentResult) -> tuple[list[tuple[int, int, bytes]], Fault | None]:
        """Append a segment's subtrees; returns the merged nodes the store should hold, and a seam fault."""
        if result.start != self.frontier.size:
            raise ValueError(f"segment starts at {result.start}, the tree has {self.frontier.size} leaves")
        seam = None
        if result.seed != self.chain:
            seam = Fault(result.start, FaultKind.LINK_BROKEN, f"stored chain hash {result.seed.hex()}, recomputed {self.chain.hex()}")
        elif result.start_frontier != self.frontier.nodes:
            seam = Fault(result.start, FaultKind.NODE_MISMATCH, f"the stored tree at size {result.start} differs from the recomputed one")
        merged: list[tuple[int, int, bytes]] = []

        def keep(level: int, index: int, digest: bytes) -> None:
            if level >= self.min_level:
                merged.append((level, index, digest))

        for level, digest in result.subtrees:
            self.frontier.append(level, digest, on_node=keep)
        self.chain = result.last_chain
        return merged, seam


def compare_merged(merged: Sequence[tuple[int, int, bytes]], stored: Mapping[tuple[int, int], bytes]) -> Fault | None:
    return first_fault(node_fault(level, index, digest, stored.get((level, index))) for level, index, digest in merged)


def stored_frontier(
    hasher: Hasher,
    size: int,
    min_level: int,
    node: Callable[[int, int], bytes | None],
    leaves: Mapping[int, bytes],
) -> Frontier | Fault:
    """The compact range at `size` from stored nodes (levels >= min_level) and stored leaf hashes below.

    `leaves` maps 0-based leaf index to its stored entry hash. Nothing here is trusted: the caller
    compares the result with a signed root, or with the tree the walk recomputes.
    """
    nodes = []
    for first, width in complete_subtrees(0, size):
        level = width.bit_length() - 1
        if level >= min_level:
            digest = node(level, first >> level)
            if digest is None:
                return Fault((first + width), FaultKind.NODE_MISSING, f"node (level {level}, index {first >> level}) is not stored")
        else:
            row = []
            for i in range(first, first + width):
                leaf = leaves.get(i)
                if leaf is None:
                    return Fault(i + 1, FaultKind.POSITION_MISSING, f"no entry at position {i + 1}")
                row.append(leaf)
            digest = SubtreeTable(hasher, first, row).get(level, first >> level)
            assert digest is not None  # a perfect, aligned run of leaves always has its root
        nodes.append((level, digest))
    return Frontier(hasher, size, nodes)


def leaf_indices_below(size: int, min_level: int) -> list[int]:
    """The leaves `stored_frontier` needs: those of the compact range's subtrees below min_level."""
    out: list[int] = []
    for first, width in complete_subtrees(0, size):
        if width.bit_length() - 1 < min_level:
            out.extend(range(first, first + width))
    return out
