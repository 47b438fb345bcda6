"""Ports: what the application needs from the outside world, as small abstract classes."""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from domain.checkpoint import Checkpoint
from domain.entry import Genesis
from domain.ledger import NewEvent, Receipt, RecordedEvent
from domain.sealing import DataKey
from domain.verify import TreeHead


class Ledger(abc.ABC):
    """The append-only, hash-chained event log."""

    @abc.abstractmethod
    def append(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None = None
    ) -> list[Receipt]:
        """Append atomically; expected_versions maps a stream to its current version (0 = new stream)."""

    @abc.abstractmethod
    async def append_async(
        self, events: Sequence[NewEvent], expected_versions: Mapping[str, int | None] | None = None
    ) -> list[Receipt]:
        """The same as append, awaited from an event loop."""

    @abc.abstractmethod
    def genesis(self) -> Genesis:
        """The ledger's identity and hash algorithm."""

    @abc.abstractmethod
    def head(self) -> TreeHead:
        """The latest committed tree head."""

    @abc.abstractmethod
    def read(self, from_position: int = 1, limit: int = 1000, tenant_id: str | None = None) -> list[RecordedEvent]:
        """Entries from a position on, in order."""

    @abc.abstractmethod
    def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        """One stream's entries in version order."""

    @abc.abstractmethod
    async def read_stream_async(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        """`read_stream` without leaving the event loop: for reads on a request's path."""

    @abc.abstractmethod
    def find(self, event_ids: Sequence[uuid.UUID]) -> list[RecordedEvent]:
        """Entries by event id."""

    @abc.abstractmethod
    def inclusion_proof(self, position: int, tree_size: int) -> list[bytes]:
        """Audit path of the entry at `position` in the tree of `tree_size` leaves."""

    @abc.abstractmethod
    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Proof that the tree of size1 is a prefix of the tree of size2."""

    @abc.abstractmethod
    def root_at(self, tree_size: int) -> bytes:
        """Merkle root of the first `tree_size` entries."""

    @abc.abstractmethod
    def iter_entries(self, from_position: int = 1, to_position: int | None = None) -> Iterator[RecordedEvent]:
        """Stream entries in position order without holding them all in memory."""


class SigningKeyHandle(abc.ABC):
    """A private key the application may use but never see."""

    key_id: str
    public_key: bytes

    @abc.abstractmethod
    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of message."""


class SigningKeyStore(abc.ABC):
    """Where signing keys live: outside the ledger tables."""

    @abc.abstractmethod
    def current(self) -> SigningKeyHandle | None:
        """The active key, if any."""

    @abc.abstractmethod
    def generate(self) -> SigningKeyHandle:
        """Create a new key and make it the active one."""


class CheckpointStore(abc.ABC):
    """Published public keys and signed checkpoints."""

    @abc.abstractmethod
    def publish_key(self, key_id: str, public_key: bytes) -> None:
        """Make a public key available to verifiers."""

    @abc.abstractmethod
    def public_keys(self) -> dict[str, bytes]:
        """Every published public key by key id."""

    @abc.abstractmethod
    def add(self, checkpoint: Checkpoint) -> None:
        """Record a signed checkpoint."""

    @abc.abstractmethod
    def latest(self) -> Checkpoint | None:
        """The checkpoint with the largest tree size."""

    @abc.abstractmethod
    def list(self, limit: int = 100, at_most_size: int | None = None) -> list[Checkpoint]:
        """Checkpoints, largest tree first."""


class SubjectKeyStore(abc.ABC):
    """One data key per data subject, stored wrapped under a master key; deleting one is crypto-shredding."""

    @abc.abstractmethod
    def get(self, tenant_id: str, subject_id: str) -> DataKey | None:
        """The subject's data key, unwrapped, or None if it has none (never had one, or it was destroyed)."""

    @abc.abstractmethod
    def get_or_create(self, tenant_id: str, subject_id: str) -> DataKey:
        """The subject's data key, created now if it has none; concurrent callers all get the same key."""

    @abc.abstractmethod
    def destroying(self, tenant_id: str, subject_id: str) -> AbstractContextManager[str | None]:
        """Delete the subject's key, yielding its kid (None: no key); committed only if the block succeeds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""


class ResumePositions(abc.ABC):
    """Where a worker that follows the ledger may resume: every position before it is done with."""

    @abc.abstractmethod
    def load(self, worker: str) -> int | None:
        """The position saved for `worker`, or None if it never saved one."""

    @abc.abstractmethod
    def advance(self, worker: str, position: int) -> None:
        """Save `position` unless a later one is saved already (several copies of a worker may save)."""

    @abc.abstractmethod
    def reset(self, worker: str, position: int) -> None:
        """Save `position` even if a later one is saved: the ledger was restored to before that one."""


@dataclass(frozen=True)
class ChangeNotice:
    """State that processes keep in memory changed: an event was appended to `stream_id`, or the data key of
    `subject_id` was destroyed. It says what to read again, never what it now holds."""

    tenant_id: str
    stream_id: str | None = None
    subject_id: str | None = None


class ChangeListener(abc.ABC):
    """What follows change notices: told of each change, and of when changes may go unannounced."""

    @abc.abstractmethod
    def resumed(self) -> None:
        """Every change is announced from now on; any before now may have gone unannounced."""

    @abc.abstractmethod
    def changed(self, notice: ChangeNotice) -> None:
        """A change committed."""

    @abc.abstractmethod
    def interrupted(self) -> None:
        """Changes go unannounced from now on, until `resumed`."""


class ChangeNotices(abc.ABC):
    """Announcements of committed changes to what other processes may have cached."""

    @abc.abstractmethod
    async def follow(self, listener: ChangeListener, stop: asyncio.Event) -> None:
        """Tell `listener` until `stop` is set: `resumed` once listening begins (and again after each
        reconnection, or after a notice that cannot be read), `changed` for each change committed while
        listening, `interrupted` when the connection is lost."""


class SharedBudget(abc.ABC):
    """Budgets that several processes spend from at once (rate limits), each keeping its own count."""

    @abc.abstractmethod
    def spent_here(self) -> dict[str, dict[str, int]]:
        """What this process spent since the last call: {budget: {opaque id: amount}}, empty budgets left out."""

    @abc.abstractmethod
    def spent_elsewhere(self, spent: Mapping[str, Mapping[str, int]], age_s: float = 0.0) -> None:
        """What another process spent, as it told us, at most `age_s` ago; budgets this process does not keep
        are ignored."""


class SpendingExchange(abc.ABC):
    """Tells the other processes what this one spent of a SharedBudget, and this one what they spent."""

    hearing: bool = False  # the others' spending is proven to reach this process (while it runs)

    @abc.abstractmethod
    async def run(self, budget: SharedBudget, stop: asyncio.Event) -> None:
        """Until `stop` is set: send `budget.spent_here()` every so often, hand every other process's spending
        to `budget.spent_elsewhere`. Spending that could not be sent (the connection lost) is sent once it can
        be, with its age."""
