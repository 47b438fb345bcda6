"""Export an audit bundle: the selected entries, a proof for each against one signed checkpoint, and keys.

The bundle format and the checks a reader makes are in domain/audit.py and docs/audit-bundle.md. Every
bundle is verified with that same offline verifier before it is handed out, so an export that would
not verify (a damaged ledger, a checkpoint that does not match it) fails here instead of at the auditor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from application.ports import CheckpointStore, Ledger
from application.signer import CheckpointSigner
from domain.audit import (
    Bundle,
    BundleEntry,
    BundleInvalid,
    ConsistencyProof,
    GenesisRecord,
    PublicKey,
    Selection,
    SignedCheckpoint,
    verify_bundle,
)
from domain.checkpoint import Checkpoint
from domain.entry import format_timestamp
from domain.ledger import RecordedEvent

PAGE = 1000


class ExportError(Exception):
    """An export that cannot be made; nothing was written."""


class InvalidSelection(ExportError):
    pass


class NothingToExport(ExportError):
    pass


class UnknownCheckpoint(ExportError):
    def __init__(self, tree_size: int) -> None:
        super().__init__(f"no signed checkpoint has tree size {tree_size}, so no consistency proof from it can be given")
        self.tree_size = tree_size


class ExportSelfCheckFailed(ExportError):
    """The bundle built from the ledger does not verify: the ledger or its checkpoints are damaged."""

    def __init__(self, cause: BundleInvalid) -> None:
        super().__init__(f"the exported bundle does not verify, so it was not written: {cause}")
        self.cause = cause


@dataclass(frozen=True)
class ExportRequest:
    """Positions from..to (None = the first / the latest), optionally narrowed to one stream and/or tenant.

    `consistency_from` names the tree sizes of checkpoints the reader already holds; empty means a
    log-spaced choice of earlier checkpoints (see `_earlier_checkpoints`).
    """

    from_position: int | None = None
    to_position: int | None = None
    stream_id: str | None = None
    tenant_id: str | None = None
    consistency_from: tuple[int, ...] = ()


def export_bundle(
    ledger: Ledger,
    checkpoints: CheckpointStore,
    signer: CheckpointSigner,
    request: ExportRequest,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Bundle:
    selection = _resolve(request, ledger.head().size)
    rows = list(_selected_rows(ledger, selection))
    if not rows:
        raise NothingToExport(f"no entries match {selection.describe()}")
    checkpoint = _covering_checkpoint(checkpoints, signer, selection.to_position)
    genesis = ledger.genesis()
    bundle = Bundle(
        genesis=GenesisRecord(genesis.ledger_id, genesis.hash_alg, genesis.created_at, genesis.format),
        selection=selection,
        checkpoint=_signed(checkpoint),
        public_keys=tuple(PublicKey(k, v) for k, v in sorted(checkpoints.public_keys().items())),
        entries=tuple(_entry(row, ledger.inclusion_proof(row.position, checkpoint.tree_size)) for row in rows),
        consistency=tuple(
            ConsistencyProof(_signed(old), tuple(ledger.consistency_proof(old.tree_size, checkpoint.tree_size)))
            for old in _earlier(checkpoints, checkpoint, request.consistency_from)
        ),
        exported_at=format_timestamp(clock()),
    )
    try:
        verify_bundle(bundle)
    except BundleInvalid as err:
        raise ExportSelfCheckFailed(err) from err
    return bundle


def _resolve(request: ExportRequest, head_size: int) -> Selection:
    """Concrete bounds: a bundle records exactly which positions it speaks for."""
    first = request.from_position if request.from_position is not None else 1
    last = min(request.to_position if request.to_position is not None else head_size, head_size)
    if first < 1:
        raise InvalidSelection(f"--from must be 1 or more, got {first}")
    if head_size == 0:
        raise NothingToExport("the ledger is empty")
    if first > last:
        raise InvalidSelection(f"the range {first}..{last} is empty (the ledger holds positions 1..{head_size})")
    return Selection(first, last, request.stream_id, request.tenant_id)


def _selected_rows(ledger: Ledger, selection: Selection) -> Iterator[RecordedEvent]:
    """Read through the narrowest index, then keep exactly the selection (the filter is the guarantee)."""
    if selection.stream_id is not None:
        source: Iterable[RecordedEvent] = ledger.read_stream(selection.stream_id)
    elif selection.tenant_id is not None:
        source = _tenant_rows(ledger, selection.tenant_id, selection.from_position, selection.to_position)
    else:
        source = ledger.iter_entries(selection.from_position, selection.to_position)
    for row in source:
        if not selection.from_position <= row.position <= selection.to_position:
            continue
        # Tenant isolation does not rest on the query alone: a row of another tenant never leaves here.
        if selection.tenant_id is not None and row.tenant_id != selection.tenant_id:
            continue
        if selection.stream_id is not None and row.stream_id != selection.stream_id:
            continue
        yield row


def _tenant_rows(ledger: Ledger, tenant_id: str, first: int, last: int) -> Iterator[RecordedEvent]:
    position = first
    while position <= last:
        page = ledger.read(position, PAGE, tenant_id=tenant_id)
        if not page:
            return
        yield from page
        position = page[-1].position + 1


def _covering_checkpoint(checkpoints: CheckpointStore, signer: CheckpointSigner, last_position: int) -> Checkpoint:
    """The latest signed checkpoint if it covers the selection; otherwise one signed now."""
    latest = checkpoints.latest()
    if latest is not None and latest.tree_size >= last_position:
        return latest
    return signer.sign_now()


def _earlier(checkpoints: CheckpointStore, checkpoint: Checkpoint, sizes: Sequence[int]) -> list[Checkpoint]:
    if not sizes:
        return _earlier_checkpoints(checkpoints, checkpoint.tree_size)
    chosen = []
    for size in sorted(set(sizes), reverse=True):
        found = checkpoints.list(limit=1, at_most_size=size)
        if not found or found[0].tree_size != size or size > checkpoint.tree_size:
            raise UnknownCheckpoint(size)
        chosen.append(found[0])
    return chosen


def _earlier_checkpoints(checkpoints: CheckpointStore, tree_size: int) -> list[Checkpoint]:
    """The newest checkpoint at or below tree_size - 1, - 2, - 4, - 8, ...

    Checkpoints are signed up to once a second, so all of them would swamp the bundle. This choice keeps
    it to about log2(size) proofs while a reader holding an older checkpoint still finds one of ours
    within a factor of two of its age; a reader who needs one exact size asks for it (consistency_from).
    """
    chosen: list[Checkpoint] = []
    gap, bound = 1, tree_size - 1
    while bound >= 1:
        found = checkpoints.list(limit=1, at_most_size=bound)
        if not found or found[0].tree_size < 1:
            break
        chosen.append(found[0])
        gap *= 2
        bound = min(tree_size - gap, found[0].tree_size - 1)
    return chosen


def _signed(checkpoint: Checkpoint) -> SignedCheckpoint:
    c = checkpoint
    return SignedCheckpoint(c.ledger_id, c.hash_alg, c.tree_size, c.root, c.chain_head, c.signed_at, c.key_id, c.signature)


def _entry(row: RecordedEvent, proof: Sequence[bytes]) -> BundleEntry:
    return BundleEntry(
        position=row.position,
        event_id=str(row.event_id),
        tenant_id=row.tenant_id,
        stream_id=row.stream_id,
        stream_version=row.stream_version,
        type=row.type,
        schema_version=row.schema_version,
        payload=row.payload.decode("utf-8"),
        metadata=row.metadata.decode("utf-8"),
        recorded_at=row.recorded_at,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
        chain_hash=row.chain_hash,
        inclusion_proof=tuple(proof),
    )
