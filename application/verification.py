"""Verify a whole ledger: chain, tree, stored Merkle nodes, tree heads and signed checkpoints.

The ledger is cut into segments of `segment_size` positions (aligned, so each segment's tree is a
handful of perfect subtrees). Each segment is verified on its own (domain.segment): it starts from the
chain hash and compact range *stored* just before it, walks its entries, recomputes its subtrees,
compares the stored Merkle nodes inside it, and the heads and checkpoints recorded inside it. The
segments can therefore run in several processes at once. The results are then joined in order
(`TreeAssembler`): the chain and tree each segment started from must be the ones recomputed for the
segments before it, and the nodes spanning segments are compared with the stored ones. The first
fault, by position, is reported: every check a segment makes rests on data before it that an earlier
check covers, so a fault caused by bad data earlier is never reported before that data's own fault.

--from-checkpoint starts at the newest checkpoint whose signature verifies (with a trusted key when
one is given). Its compact range is rebuilt from stored nodes and leaf hashes (O(log n) reads) and
must hash to the signed root: the root is a hash of exactly that range, so a match authenticates
every hash in it without reading the prefix. Recomputing the root over the whole prefix would be
equally sound and cost the full walk that starting from a checkpoint is meant to save. What the
prefix does not get in that mode: its entries' content, its stored nodes outside the compact range,
and its older heads and checkpoints are not re-checked (an earlier full run covers them).
"""

from __future__ import annotations

import abc
import multiprocessing
import multiprocessing.util
import signal
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field

from domain.checkpoint import Checkpoint, CheckpointSignatureInvalid, key_id_for
from domain.entry import FORMAT_VERSION, Genesis
from domain.frontier import Frontier
from domain.hashing import UnknownHashAlgorithm
from domain.ledger import RecordedEvent
from domain.merkle import complete_subtrees
from domain.segment import (
    Expectation,
    Record,
    SegmentResult,
    SegmentWalker,
    SubtreeTable,
    TreeAssembler,
    check_heads,
    compare_merged,
    compare_nodes,
    leaf_indices_below,
    nodes_match,
    stored_frontier,
)
from domain.verify import Fault, FaultKind, TreeHead, check_head, first_fault

# --- the port ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenesisRecord:
    """The stored genesis row: its fields, and the canonical bytes and chain seed stored with them."""

    ledger_id: str
    hash_alg: str
    format: int
    created_at: str
    canonical: bytes
    chain_seed: bytes


class LedgerSource(abc.ABC):
    """A consistent, read-only view of one ledger's tables, as verification needs them."""

    @property
    @abc.abstractmethod
    def stored_level_min(self) -> int:
        """The lowest Merkle level whose nodes the store keeps."""

    @abc.abstractmethod
    def genesis_records(self) -> list[GenesisRecord]:
        """Every genesis row (a sound ledger has exactly one)."""

    @abc.abstractmethod
    def last_sizes(self) -> tuple[int, int]:
        """The largest size recorded by a tree head, and by a signed checkpoint (0 when none)."""

    @abc.abstractmethod
    def records(self, ledger_id: str, after: int | None, upto: int | None, chunk: int = 64) -> Generator[list[Record]]:
        """Entries with after < position <= upto, in position order, as domain.segment records.

        Streamed: until the generator is exhausted or closed, the source answers nothing else.
        """

    @abc.abstractmethod
    def entry_after(self, position: int) -> RecordedEvent | None:
        """The entry with the smallest position above `position`, if any."""

    @abc.abstractmethod
    def chain_hash_at(self, position: int) -> bytes | None:
        """The stored chain hash of the entry at `position`."""

    @abc.abstractmethod
    def entry_hashes(self, positions: Sequence[int]) -> dict[int, bytes]:
        """Stored entry hashes by position."""

    @abc.abstractmethod
    def nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored Merkle nodes by (level, index), for the keys that exist."""

    @abc.abstractmethod
    def nodes_in(self, ranges: Sequence[tuple[int, int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored Merkle nodes with first <= index < end at each (level, first, end)."""

    @abc.abstractmethod
    def node_levels(self, ranges: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, bytes]]:
        """Per level of (level, first, end): the first stored index, how many nodes of 32 bytes, their hashes joined."""

    @abc.abstractmethod
    def stray_nodes(self, size: int, min_level: int) -> list[tuple[int, int]]:
        """Stored nodes that no tree of `size` leaves has (beyond it, or below min_level)."""

    @abc.abstractmethod
    def heads(self, after: int, upto: int | None) -> list[TreeHead]:
        """Stored tree heads with after < size <= upto, their compact ranges included."""

    @abc.abstractmethod
    def checkpoints(self, after: int | None, upto: int | None) -> list[Checkpoint]:
        """Signed checkpoints with after < tree_size <= upto."""

    @abc.abstractmethod
    def signing_keys(self) -> dict[str, bytes]:
        """Published Ed25519 public keys by key id."""


SourceOpener = Callable[[], AbstractContextManager[LedgerSource]]
"""Opens, in a worker process, a source onto the same snapshot as the caller's (must be picklable)."""

Progress = Callable[[int, int], None]
"""progress(positions verified so far, positions the ledger claims to have)."""


# --- options and report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyOptions:
    from_checkpoint: bool = False
    trusted_keys: tuple[bytes, ...] = ()
    workers: int = 1
    segment_size: int = 1 << 14
    chunk: int = 64

    def __post_init__(self) -> None:
        if self.segment_size < 1 or self.segment_size & (self.segment_size - 1):
            raise ValueError(f"segment size {self.segment_size} must be a power of two")


@dataclass(frozen=True)
class VerificationReport:
    fault: Fault | None
    size: int
    root: bytes
    chain_head: bytes
    started_from: int
    heads_checked: int = 0
    checkpoints_checked: int = 0
    trusted_checkpoints: int = 0
    nodes_checked: int = 0
    precise_rows: int = 0  # entries the fast path handed to the precise one (0 on a sound ledger)
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.fault is None

    @property
    def entries_walked(self) -> int:
        return self.size - self.started_from


# --- one segment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentJob:
    genesis: Genesis
    start: int
    end: int | None  # None: to the end of the ledger
    min_level: int
    keys: Mapping[str, bytes]
    trusted: Mapping[str, bytes]
    chunk: int = 64
    seed: bytes | None = None  # the trusted chain hash at `start`; None: read the stored one
    frontier: tuple[tuple[int, bytes], ...] | None = None  # the trusted compact range at `start`


def verify_segment(source: LedgerSource, job: SegmentJob, progress: Callable[[int], None] | None = None) -> SegmentResult:
    """Walk the entries after job.start (up to job.end) and check everything recorded inside them."""
    hasher = job.genesis.hasher
    if job.seed is not None and job.frontier is not None:
        seed, frontier = job.seed, Frontier(hasher, job.start, job.frontier)
    else:
        stored_seed = source.chain_hash_at(job.start)
        if stored_seed is None:
            return _stopped(job, b"", Fault(job.start, FaultKind.POSITION_MISSING, f"no entry at position {job.start}"))
        seed = stored_seed
        built = _stored_frontier(source, job.genesis, job.start, job.min_level)
        if isinstance(built, Fault):
            return _stopped(job, seed, built)
        frontier = built

    heads = source.heads(job.start, job.end)
    checkpoints = source.checkpoints(job.start, job.end)
    walker = SegmentWalker(job.genesis, job.start, seed, [h.size for h in heads] + [c.tree_size for c in checkpoints])
    _walk(source, walker, job, progress)

    at_end = False
    if walker.fault is None:
        if job.end is None:
            at_end = True
        elif walker.position < job.end:
            after = source.entry_after(walker.position)
            if after is None:
                at_end = True
            else:
                walker.feed_entry(after)  # necessarily a later position: the fault names the gap

    end = walker.position
    table = SubtreeTable(hasher, job.start, walker.leaves)
    ranges = table.node_ranges(job.min_level)
    node_fault = None
    if not nodes_match(table, source.node_levels(ranges), job.min_level):  # then find out which, and how
        node_fault = compare_nodes(table, source.nodes_in(ranges), job.min_level)

    expected = [Expectation(h, FaultKind.ROOT_MISMATCH) for h in heads if h.size <= end]
    signature_faults = []
    trusted_count = 0
    for checkpoint in checkpoints:
        if checkpoint.tree_size > end:
            continue
        fault, trusted = check_signature(checkpoint, job.genesis, job.keys, job.trusted)
        signature_faults.append(fault)
        trusted_count += trusted
        expected.append(
            Expectation(TreeHead(checkpoint.tree_size, checkpoint.root, checkpoint.chain_head), FaultKind.CHECKPOINT_MISMATCH)
        )
    head_fault = check_heads(table, frontier, walker.chains_at, expected)

    return SegmentResult(
        start=job.start,
        end=end,
        seed=seed,
        last_chain=walker.chain,
        start_frontier=list(frontier.nodes),
        subtrees=table.covering(job.start, end),
        fault=first_fault([walker.fault, node_fault, head_fault, *signature_faults]),
        at_end_of_ledger=at_end,
        heads_checked=sum(1 for e in expected if e.kind is FaultKind.ROOT_MISMATCH),
        checkpoints_checked=len(expected) - sum(1 for e in expected if e.kind is FaultKind.ROOT_MISMATCH),
        trusted_checkpoints=trusted_count,
        nodes_checked=sum(hi - lo for _, lo, hi in ranges),
        precise_rows=walker.precise,
    )


def _walk(source: LedgerSource, walker: SegmentWalker, job: SegmentJob, progress: Callable[[int], None] | None) -> None:
    """Feed records to the fast path; hand each record it does not accept to the precise path.

    The records arrive while the store is still sending them, so the stream is closed (which reads
    it to its end) before the precise path queries the store, and reopened after that row.
    """
    while True:
        records = source.records(job.genesis.ledger_id, walker.position, job.end, job.chunk)
        try:
            for batch in records:
                if walker.feed_records(batch) < len(batch):
                    break
                if progress is not None:
                    progress(walker.position)
            else:
                return
        finally:
            records.close()
        row = source.entry_after(walker.position)
        if row is None:  # the record vanished between two reads of one snapshot
            walker.fault = Fault(walker.position + 1, FaultKind.POSITION_MISSING, "the entry could not be read again")
            return
        if not walker.feed_entry(row):
            return
        if job.end is not None and walker.position >= job.end:
            return


def _stopped(job: SegmentJob, seed: bytes, fault: Fault) -> SegmentResult:
    return SegmentResult(job.start, job.start, seed, seed, [], [], fault, at_end_of_ledger=False)


def _stored_frontier(source: LedgerSource, genesis: Genesis, size: int, min_level: int) -> Frontier | Fault:
    indices = leaf_indices_below(size, min_level)
    by_position = source.entry_hashes([i + 1 for i in indices])
    leaves = {position - 1: digest for position, digest in by_position.items()}
    wanted = [(w.bit_length() - 1, s >> (w.bit_length() - 1)) for s, w in complete_subtrees(0, size) if w.bit_length() - 1 >= min_level]
    stored = source.nodes(wanted)
    return stored_frontier(genesis.hasher, size, min_level, lambda level, index: stored.get((level, index)), leaves)


def check_signature(
    checkpoint: Checkpoint, genesis: Genesis, keys: Mapping[str, bytes], trusted: Mapping[str, bytes]
) -> tuple[Fault | None, bool]:
    """Whether a checkpoint is this ledger's and signed by its key; and whether that key is a trusted one."""
    if checkpoint.ledger_id != genesis.ledger_id or checkpoint.hash_alg != genesis.hash_alg:
        return Fault(
            checkpoint.tree_size,
            FaultKind.CHECKPOINT_MISMATCH,
            f"checkpoint names ledger {checkpoint.ledger_id} ({checkpoint.hash_alg}), "
            f"this is {genesis.ledger_id} ({genesis.hash_alg})",
        ), False
    key = trusted.get(checkpoint.key_id) or keys.get(checkpoint.key_id)
    if key is None:
        return Fault(
            checkpoint.tree_size, FaultKind.SIGNATURE_INVALID, f"key {checkpoint.key_id} is neither published nor trusted"
        ), False
    try:
        checkpoint.verify(key)
    except CheckpointSignatureInvalid as exc:
        return Fault(checkpoint.tree_size, FaultKind.SIGNATURE_INVALID, str(exc)), False
    return None, checkpoint.key_id in trusted


# --- the whole ledger -------------------------------------------------------------------------------


@dataclass
class _Start:
    size: int
    chain: bytes
    frontier: Frontier
    notes: list[str] = field(default_factory=list)
    trusted_checkpoints: int = 0


def verify_ledger(
    source: LedgerSource,
    options: VerifyOptions | None = None,
    progress: Progress | None = None,
    opener: SourceOpener | None = None,
) -> VerificationReport:
    """Verify everything; the report carries the first fault, or the verified size, root and chain head.

    With options.workers > 1 and an `opener`, segments are verified by that many processes, each
    reading the same snapshot as `source` through its own connection.
    """
    options = options or VerifyOptions()
    genesis_or_fault = load_genesis(source.genesis_records())
    if isinstance(genesis_or_fault, Fault):
        return VerificationReport(genesis_or_fault, 0, b"", b"", 0)
    genesis = genesis_or_fault
    min_level = source.stored_level_min
    keys = source.signing_keys()
    trusted = {key_id_for(key): key for key in options.trusted_keys}

    start_or_fault = _choose_start(source, genesis, keys, trusted, min_level, options.from_checkpoint)
    if isinstance(start_or_fault, Fault):
        return VerificationReport(start_or_fault, 0, b"", b"", 0)
    start = start_or_fault
    last_head, last_checkpoint = source.last_sizes()
    claimed = max(last_head, last_checkpoint, start.size)

    assembler = TreeAssembler(start.frontier.copy(), start.chain, min_level)
    counts = {"heads": 0, "checkpoints": 0, "trusted": start.trusted_checkpoints, "nodes": 0, "precise": 0}
    jobs = _plan(genesis, start, claimed, options, min_level, keys, trusted)

    def report(fault: Fault | None) -> VerificationReport:
        return VerificationReport(
            fault,
            assembler.size,
            assembler.frontier.root(),
            assembler.chain,
            start.size,
            counts["heads"],
            counts["checkpoints"],
            counts["trusted"],
            counts["nodes"],
            counts["precise"],
            tuple(start.notes),
        )

    at_start = first_fault(_start_faults(source, genesis, start, keys, trusted, counts))
    if at_start is not None:
        return report(at_start)
    for result in _run(source, jobs, options, opener, progress, claimed):
        merged, seam = assembler.add(result)
        counts["heads"] += result.heads_checked
        counts["checkpoints"] += result.checkpoints_checked
        counts["trusted"] += result.trusted_checkpoints
        counts["nodes"] += result.nodes_checked + len(merged)
        counts["precise"] += result.precise_rows
        merged_fault = compare_merged(merged, source.nodes([(level, index) for level, index, _ in merged]))
        beyond = None
        if result.end > last_head:  # entries no head covers: the first of them is the first bad one
            beyond = Fault(last_head + 1, FaultKind.BEYOND_HEAD, f"entries run past {last_head}, the last recorded tree head")
        fault = first_fault([result.fault, seam, merged_fault, beyond])
        if fault is not None:
            return report(fault)
        if progress is not None:
            progress(assembler.size, claimed)
        if result.at_end_of_ledger:
            break

    size = assembler.size
    endings: list[Fault | None] = []
    if claimed > size:
        what = "tree head" if last_head > size else "signed checkpoint"
        endings.append(
            Fault(size + 1, FaultKind.HEAD_MISSING_ENTRIES, f"a {what} records size {claimed}, the ledger ends at {size}")
        )
    endings.extend(
        Fault(
            max((index + 1) << level, 1) if index >= 0 else 1,
            FaultKind.NODE_UNEXPECTED,
            f"node (level {level}, index {index}) is stored, a tree of {size} entries has no such node",
        )
        for level, index in source.stray_nodes(size, min_level)
    )
    if trusted and counts["trusted"] == 0:
        endings.append(
            Fault(0, FaultKind.UNTRUSTED, f"none of the checkpoints is signed by {', '.join(sorted(trusted))}")
        )
    return report(first_fault(endings))


def load_genesis(records: Sequence[GenesisRecord]) -> Genesis | Fault:
    """The ledger's genesis, if its stored row is whole: canonical bytes and chain seed must match its fields."""
    if len(records) != 1:
        return Fault(0, FaultKind.GENESIS_CHANGED, f"expected one genesis record, found {len(records)}")
    record = records[0]
    genesis = Genesis(record.ledger_id, record.hash_alg, record.created_at, record.format)
    try:
        seed = genesis.chain_seed()
    except UnknownHashAlgorithm as exc:
        return Fault(0, FaultKind.GENESIS_CHANGED, str(exc))
    if record.format != FORMAT_VERSION:
        return Fault(0, FaultKind.GENESIS_CHANGED, f"format {record.format}, this verifier reads {FORMAT_VERSION}")
    if genesis.canonical() != record.canonical:
        return Fault(0, FaultKind.GENESIS_CHANGED, "the stored genesis bytes differ from its fields")
    if seed != record.chain_seed:
        return Fault(0, FaultKind.GENESIS_CHANGED, f"stored chain seed {record.chain_seed.hex()}, recomputed {seed.hex()}")
    return genesis


def _choose_start(
    source: LedgerSource,
    genesis: Genesis,
    keys: Mapping[str, bytes],
    trusted: Mapping[str, bytes],
    min_level: int,
    from_checkpoint: bool,
) -> _Start | Fault:
    hasher = genesis.hasher
    genesis_start = _Start(0, genesis.chain_seed(), Frontier(hasher))
    if not from_checkpoint:
        return genesis_start
    chosen = None
    for checkpoint in sorted(source.checkpoints(0, None), key=lambda c: c.tree_size, reverse=True):
        fault, by_trusted = check_signature(checkpoint, genesis, keys, trusted)
        if fault is None and (by_trusted or not trusted):
            chosen = checkpoint
            break
    if chosen is None:
        genesis_start.notes.append("no usable signed checkpoint to start from: verified from genesis")
        return genesis_start
    size = chosen.tree_size
    built = _stored_frontier(source, genesis, size, min_level)
    if isinstance(built, Fault):
        return built
    if built.root() != chosen.root:
        return Fault(
            size,
            FaultKind.CHECKPOINT_MISMATCH,
            f"the stored tree at size {size} hashes to {built.root().hex()}, the checkpoint signs {chosen.root.hex()}",
        )
    stored_chain = source.chain_hash_at(size)
    if stored_chain != chosen.chain_head:
        found = stored_chain.hex() if stored_chain else "nothing"
        return Fault(size, FaultKind.LINK_BROKEN, f"stored chain hash {found}, the checkpoint signs {chosen.chain_head.hex()}")
    start = _Start(size, chosen.chain_head, built, trusted_checkpoints=1 if trusted else 0)
    start.notes.append(f"started from the checkpoint at size {size} signed by {chosen.key_id}")
    return start


def _start_faults(
    source: LedgerSource,
    genesis: Genesis,
    start: _Start,
    keys: Mapping[str, bytes],
    trusted: Mapping[str, bytes],
    counts: dict[str, int],
) -> Iterable[Fault | None]:
    """Heads and checkpoints recorded exactly at the starting size (the empty ledger, or the checkpoint)."""
    root, frontier_bytes = start.frontier.root(), start.frontier.to_bytes()
    for head in source.heads(start.size - 1, start.size) if start.size > 0 else []:
        counts["heads"] += 1
        yield check_head(head, root, start.chain, frontier_bytes, FaultKind.ROOT_MISMATCH)
    for checkpoint in source.checkpoints(start.size - 1, start.size):
        counts["checkpoints"] += 1
        fault, by_trusted = check_signature(checkpoint, genesis, keys, trusted)
        if start.size == 0:
            counts["trusted"] += by_trusted
        yield fault
        yield check_head(
            TreeHead(checkpoint.tree_size, checkpoint.root, checkpoint.chain_head),
            root,
            start.chain,
            frontier_bytes,
            FaultKind.CHECKPOINT_MISMATCH,
        )


def _plan(
    genesis: Genesis,
    start: _Start,
    claimed: int,
    options: VerifyOptions,
    min_level: int,
    keys: Mapping[str, bytes],
    trusted: Mapping[str, bytes],
) -> list[SegmentJob]:
    """Segments ending on multiples of segment_size; the last one runs to whatever the ledger holds."""
    step = options.segment_size
    bounds = list(range((start.size // step + 1) * step, claimed, step))
    starts = [start.size, *bounds]
    ends: list[int | None] = [*bounds, None]
    jobs = [SegmentJob(genesis, a, b, min_level, dict(keys), dict(trusted), options.chunk) for a, b in zip(starts, ends, strict=True)]
    first = jobs[0]
    jobs[0] = SegmentJob(
        genesis, first.start, first.end, min_level, first.keys, first.trusted, first.chunk,
        seed=start.chain, frontier=tuple(start.frontier.nodes),
    )
    return jobs


def _run(
    source: LedgerSource,
    jobs: list[SegmentJob],
    options: VerifyOptions,
    opener: SourceOpener | None,
    progress: Progress | None,
    claimed: int,
) -> Iterator[SegmentResult]:
    """Segment results in order, computed here or, when asked for and possible, by worker processes."""
    if options.workers <= 1 or opener is None or len(jobs) == 1:
        for job in jobs:
            tick = (lambda position: progress(position, claimed)) if progress is not None else None
            yield verify_segment(source, job, tick)
        return
    # fork: the workers inherit the loaded modules and start in milliseconds. The caller's connection
    # is inherited too but never touched by them (they open their own onto the exported snapshot).
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    pool = context.Pool(options.workers, initializer=_ignore_interrupts)
    finished = False
    try:
        yield from pool.imap(_verify_in_worker, [(opener, job) for job in jobs])
        finished = True
    finally:
        if finished:
            pool.close()  # let the workers close their connections (multiprocessing.util.Finalize)
        else:
            pool.terminate()
        pool.join()


_worker_sources: dict[object, LedgerSource] = {}


def _ignore_interrupts() -> None:
    """Ctrl-C is the parent's to handle (it ends the pool); workers would only print tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _verify_in_worker(task: tuple[SourceOpener, SegmentJob]) -> SegmentResult:
    opener, job = task
    source = _worker_sources.get(opener)
    if source is None:
        stack = ExitStack()
        source = stack.enter_context(opener())
        multiprocessing.util.Finalize(None, stack.close, exitpriority=10)
        _worker_sources[opener] = source
    return verify_segment(source, job)
