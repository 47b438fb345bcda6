"""eventsourcing's recorders over our ledger, so `eventsourcing.application.Application`s persist through the chain.

A StoredEvent becomes one ledger entry (docs/eventsourcing-bridge.md is the prose):
    stream_id  es:<namespace>:<tenant>:<originator_id>   (namespace = application name, or "<name>.snapshots")
    type       PascalCase name derived from the topic    ("bank.domain:Account.Opened" -> "AccountOpened")
    payload    the state itself when it is an RFC 8785 JSON object, else {"base64": ...} (ciphertext, zlib...)
    metadata   {"eventsourcing": {"topic", "originator_version", "state": "json"|"base64"}} plus the metadata
               of `ledger_metadata(...)` (correlation and causation ids); tenant_id is the recorder's tenant.
Notification ids are ledger positions. The recorders use only the Ledger port (append, read, read_stream, head).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import pairwise
from typing import Any, Literal, cast
from uuid import UUID, uuid4

import orjson
import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    InfrastructureFactory,
    IntegrityError,
    JSONTranscoder,
    ListenNotifySubscription,
    Notification,
    NotSupportedError,
    OperationalError,
    ProcessRecorder,
    ProgrammingError,
    ShutDown,
    StoredEvent,
    TrackingRecorder,
    Transcoder,
)
from eventsourcing.utils import Environment, EnvType

from adapters.postgres.ledger_store import PostgresLedger
from application.ports import Ledger
from domain.canonical import NotCanonicalisable, canonical_json
from domain.ledger import ConcurrencyError, InvalidEvent, LedgerUnavailable, NewEvent, Receipt, RecordedEvent

METADATA_KEY = "eventsourcing"
STREAM_PREFIX = "es"
VERSION_CONFLICT_ATTEMPTS = 8
"""A stream that moved on between our read and our append is re-read and re-checked this many times."""
UNAVAILABLE_ATTEMPTS = 3

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
_WORD = re.compile(r"[A-Za-z0-9]+")

OriginatorIdType = Literal["uuid", "text"]

# --- tenant-independent request metadata -------------------------------------------------------------------

_request_metadata: ContextVar[Mapping[str, Any] | None] = ContextVar("nexus_ledger_metadata", default=None)


@contextmanager
def ledger_metadata(**fields: Any) -> Iterator[None]:
    """Adds fields (correlation_id, causation_id, actor...) to the metadata of every event recorded inside.

    eventsourcing's API has no place for them, and they differ per request while the recorder lives as
    long as the Application, so they travel in a context variable (threads and asyncio tasks each see
    their own). Nested blocks add to, and may override, the outer block's fields.
    """
    if METADATA_KEY in fields:
        raise ValueError(f"metadata key {METADATA_KEY!r} is reserved for the recorder")
    token = _request_metadata.set({**(_request_metadata.get() or {}), **fields})
    try:
        yield
    finally:
        _request_metadata.reset(token)


# --- the mapping between StoredEvent and ledger entries -----------------------------------------------------


def type_name_for(topic: str) -> str:
    """The ledger's PascalCase event type for an eventsourcing topic: the last two names of the class's path.

    "bank.domain:Account.Opened" -> "AccountOpened", "bank.events:Deposited" -> "Deposited". The type is
    a label for people and projections; the topic in the metadata is what the mapper resolves.
    """
    _, _, qualname = topic.rpartition(":")
    names = [part for part in qualname.split(".") if part != "<locals>"][-2:]
    name = "".join(word[:1].upper() + word[1:] for word in _WORD.findall(" ".join(names)))
    if not name[:1].isalpha():
        name = "Event" + name
    return name[:100]


def encode_state(state: bytes) -> tuple[dict[str, Any], str, int]:
    """(payload, encoding, schema_version) for a StoredEvent's state.

    The state is stored as the JSON object itself only if it already is canonical JSON, because then
    the ledger's canonical payload bytes *are* the state and reading gives back the exact bytes written.
    Anything else (ciphertext, compressed bytes, JSON with floats or unsorted keys) is kept as base64.
    """
    obj = _canonical_object(state)
    if obj is None:
        return {"base64": base64.b64encode(state).decode("ascii")}, "base64", 1
    class_version = obj.get("class_version")  # the mapper's upcasting version is our schema version
    if type(class_version) is not int or not 1 <= class_version < 2**31:
        class_version = 1
    return obj, "json", class_version


def _canonical_object(state: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(state)
    except ValueError:  # not UTF-8 or not JSON
        return None
    if not isinstance(obj, dict):
        return None
    try:
        return obj if canonical_json(obj) == state else None
    except NotCanonicalisable:
        return None


def decode_state(payload: bytes, encoding: str) -> bytes:
    if encoding == "json":
        return payload  # the stored canonical bytes, verbatim
    return base64.b64decode(orjson.loads(payload)["base64"])


class CanonicalJSONTranscoder(JSONTranscoder):
    """JSONTranscoder with sorted keys: most event states come out as RFC 8785 bytes and so are stored as
    readable JSON objects rather than base64 (floats still differ from RFC 8785 and fall back to base64)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = json.JSONEncoder(
            default=self._encode_obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True
        )


# --- recorders -----------------------------------------------------------------------------------------------


@contextmanager
def _as_persistence_errors() -> Iterator[None]:
    """The ledger's errors as the exception classes eventsourcing's callers handle."""
    try:
        yield
    except InvalidEvent as exc:
        raise DataError(str(exc)) from exc
    except LedgerUnavailable as exc:
        raise OperationalError(str(exc)) from exc
    except psycopg.Error as exc:
        raise OperationalError(f"ledger read failed: {exc}") from exc


class LedgerAggregateRecorder(AggregateRecorder):
    """Aggregate sequences as ledger streams (also used for snapshots, under their own namespace)."""

    def __init__(
        self,
        ledger: Ledger,
        namespace: str,
        *,
        tenant_id: str = "_system",
        originator_id_type: OriginatorIdType = "uuid",
    ) -> None:
        if not _NAMESPACE.match(namespace):
            raise ProgrammingError(f"namespace {namespace!r} must match {_NAMESPACE.pattern}")
        if originator_id_type not in ("uuid", "text"):
            raise ProgrammingError(f"originator_id_type {originator_id_type!r} must be 'uuid' or 'text'")
        self.ledger = ledger
        self.namespace = namespace
        self.tenant_id = tenant_id
        self.originator_id_type = originator_id_type
        self.stream_prefix = f"{STREAM_PREFIX}:{namespace}:{tenant_id}:"
        try:  # the ledger's own rules for tenant ids, checked now rather than at the first save
            NewEvent(self.stream_prefix + "probe", "Probe", {}, tenant_id=tenant_id)
        except InvalidEvent as exc:
            raise ProgrammingError(str(exc)) from None

    # --- writing ---------------------------------------------------------------------------------------------

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        self._record(stored_events, kwargs)
        return None

    def _record(self, stored_events: Sequence[StoredEvent], kwargs: Mapping[str, Any]) -> list[Receipt]:
        if kwargs.get("tracking") is not None:
            raise NotSupportedError("tracking records cannot share the ledger's append transaction")
        if not stored_events:
            return []
        with _as_persistence_errors():
            extra = _request_metadata.get() or {}
            versions: dict[str, list[int]] = {}
            events = []
            for stored in stored_events:
                stream_id = self._stream_id(stored.originator_id)
                versions.setdefault(stream_id, []).append(stored.originator_version)
                events.append(self._new_event(stream_id, stored, extra))
            for stream_id, wanted in versions.items():
                if any(later <= earlier for earlier, later in pairwise(wanted)):
                    raise IntegrityError(f"{stream_id}: versions {wanted} are not strictly increasing")
            for _ in range(VERSION_CONFLICT_ATTEMPTS):
                expected = {stream_id: self._check_next(stream_id, wanted[0]) for stream_id, wanted in versions.items()}
                try:
                    receipts = self._append(events, expected)
                except ConcurrencyError:
                    continue  # another writer moved one of these streams on: re-read and re-check
                self._appended()
                return receipts
            raise IntegrityError(f"streams {sorted(versions)} kept moving; gave up after {VERSION_CONFLICT_ATTEMPTS} attempts")

    def _check_next(self, stream_id: str, first_version: int) -> int:
        """The stream's ledger version, after checking that first_version comes after its last recorded version.

        The ledger numbers a stream 1, 2, 3... itself, so an originator version cannot be the ledger's
        unique key: instead versions must increase (gaps allowed, as snapshots need), and the expected
        ledger version passed to append makes that check atomic with the write.
        """
        rows = self.ledger.read_stream(stream_id)
        if not rows:
            return 0
        last = rows[-1]
        last_version = self._header(last)["originator_version"]
        if first_version <= last_version:
            raise IntegrityError(
                f"{stream_id}: version {first_version} is not after the recorded version {last_version}"
            )
        return last.stream_version

    def _append(self, events: list[NewEvent], expected: dict[str, int]) -> list[Receipt]:
        """Append, retrying an unavailable ledger with the *same* event ids: if a lost attempt did commit,
        the ledger answers the retry with the original receipts, so nothing is ever recorded twice."""
        for attempt in range(UNAVAILABLE_ATTEMPTS):
            try:
                return self.ledger.append(events, expected)
            except LedgerUnavailable:
                if attempt == UNAVAILABLE_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    def _appended(self) -> None:
        """Hook: an append committed (the application recorder wakes its subscriptions)."""

    def _new_event(self, stream_id: str, stored: StoredEvent, extra: Mapping[str, Any]) -> NewEvent:
        payload, encoding, schema_version = encode_state(stored.state)
        header = {"topic": stored.topic, "originator_version": stored.originator_version, "state": encoding}
        return NewEvent(
            stream_id=stream_id,
            type=type_name_for(stored.topic),
            payload=payload,
            tenant_id=self.tenant_id,
            metadata={**extra, METADATA_KEY: header},
            schema_version=schema_version,
            event_id=uuid4(),
        )

    # --- reading ---------------------------------------------------------------------------------------------

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        with _as_persistence_errors():
            rows = self.ledger.read_stream(self._stream_id(originator_id))
        events = [self._stored_event(row) for row in rows]
        events = [
            e for e in events if (gt is None or e.originator_version > gt) and (lte is None or e.originator_version <= lte)
        ]
        if desc:
            events.reverse()
        return events if limit is None else events[:limit]

    def _stream_id(self, originator_id: UUID | str) -> str:
        if self.originator_id_type == "text":
            return self.stream_prefix + str(originator_id)
        try:
            return self.stream_prefix + str(originator_id if isinstance(originator_id, UUID) else UUID(originator_id))
        except (ValueError, TypeError, AttributeError):
            raise DataError(f"originator id {originator_id!r} is not a UUID") from None

    def _originator_id(self, stream_id: str) -> UUID | str:
        text = stream_id[len(self.stream_prefix) :]
        return UUID(text) if self.originator_id_type == "uuid" else text

    def _stored_event(self, row: RecordedEvent) -> StoredEvent:
        header = self._header(row)
        return StoredEvent(
            originator_id=self._originator_id(row.stream_id),
            originator_version=header["originator_version"],
            topic=header["topic"],
            state=decode_state(row.payload, header["state"]),
        )

    @staticmethod
    def _header(row: RecordedEvent) -> dict[str, Any]:
        try:
            return orjson.loads(row.metadata)[METADATA_KEY]
        except (KeyError, TypeError, orjson.JSONDecodeError):
            raise DataError(f"ledger position {row.position} on {row.stream_id!r} has no eventsourcing header") from None


class LedgerApplicationRecorder(LedgerAggregateRecorder, ApplicationRecorder):
    """The application sequence is the ledger itself, read through this recorder's namespace and tenant."""

    def __init__(
        self,
        ledger: Ledger,
        namespace: str,
        *,
        tenant_id: str = "_system",
        originator_id_type: OriginatorIdType = "uuid",
        poll_interval: float = 0.1,
    ) -> None:
        super().__init__(ledger, namespace, tenant_id=tenant_id, originator_id_type=originator_id_type)
        self.poll_interval = poll_interval
        self._append_signal = threading.Condition()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        return [receipt.position for receipt in self._record(stored_events, kwargs)]

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        first = 1 if start is None else start if inclusive_of_start else start + 1
        notifications, _ = self.scan(max(first, 1), limit, stop, topics)
        return notifications

    def scan(
        self, first: int, limit: int, stop: int | None = None, topics: Sequence[str] = ()
    ) -> tuple[list[Notification], int]:
        """Up to `limit` of our notifications from position `first` on, and the last position examined.

        The ledger also holds other applications', other tenants' and the gateway's own entries, so
        notification ids have gaps, and finding `limit` of ours may take more than one page. The last
        position examined lets a tailing reader skip past foreign entries for good.
        """
        wanted = set(topics)
        found: list[Notification] = []
        examined = first - 1
        page = min(max(limit, 64), 1000)
        with _as_persistence_errors():
            while len(found) < limit:
                rows = self.ledger.read(first, page, tenant_id=self.tenant_id)
                if not rows:  # an empty page, not a short one, marks the end: the ledger may cap `limit`
                    break
                for row in rows:
                    if stop is not None and row.position > stop:
                        return found, max(examined, stop)
                    examined = row.position
                    if not row.stream_id.startswith(self.stream_prefix):
                        continue
                    notification = self._notification(row)
                    if wanted and notification.topic not in wanted:
                        continue
                    found.append(notification)
                    if len(found) == limit:
                        break
                first = rows[-1].position + 1
        return found, examined

    def max_notification_id(self) -> int | None:
        """Our last position, found by looking back from the ledger's head in widening windows."""
        with _as_persistence_errors():
            high = self.ledger.head().size
            window = 256
            while high >= 1:
                low = max(1, high - window + 1)
                # At most `window` positions lie in [low, high], so a page of that size holds all of
                # the tenant's entries in the range (and possibly later ones, which are ignored).
                rows = self.ledger.read(low, high - low + 1, tenant_id=self.tenant_id)
                ours = [r.position for r in rows if r.position <= high and r.stream_id.startswith(self.stream_prefix)]
                if ours:
                    return max(ours)
                high = low - 1
                window = min(window * 2, 1000)  # read's default page; larger pages might be capped
        return None

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> LedgerSubscription:
        return LedgerSubscription(self, gt=gt, topics=topics)

    def _notification(self, row: RecordedEvent) -> Notification:
        stored = self._stored_event(row)
        return Notification(
            id=row.position,
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=stored.state,
        )

    def _appended(self) -> None:
        with self._append_signal:
            self._append_signal.notify_all()

    def wait_for_append(self, timeout: float) -> None:
        """Returns when this recorder has appended, or after timeout (other processes' appends are polled)."""
        with self._append_signal:
            self._append_signal.wait(timeout)


class LedgerSubscription(ListenNotifySubscription[LedgerApplicationRecorder]):
    """Tails the ledger by polling, since the ledger sends no NOTIFY; this recorder's own appends wake it at once."""

    def __init__(self, recorder: LedgerApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._poll_thread = threading.Thread(target=self._poll, name="ledger-subscription-poll", daemon=True)
        self._poll_thread.start()

    def stop(self) -> None:
        super().stop()
        self._recorder._appended()  # wake the poll thread so it sees the stop now, not after an interval

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._poll_thread.join()

    def _poll(self) -> None:
        while not self._has_been_stopped:
            self._recorder.wait_for_append(self._recorder.poll_interval)
            self._has_been_notified.set()

    def _pull(self) -> None:
        # As the library's _pull, except that the position advances past entries that are not ours,
        # so a quiet application does not rescan the gateway's traffic on every poll.
        while not self._has_been_stopped:
            self._has_been_notified.clear()
            after = self._last_notification_id or 0
            notifications, examined = self._recorder.scan(after + 1, self._select_limit, topics=self._topics)
            if notifications:
                try:
                    self._notifications_queue.put(notifications)
                except ShutDown:
                    break
            self._last_notification_id = max(after, examined)
            if len(notifications) < self._select_limit:
                break


# --- the factory eventsourcing finds through PERSISTENCE_MODULE=adapters.postgres.eventsourcing_recorder ----


class LedgerInfrastructureFactory(InfrastructureFactory[TrackingRecorder]):
    """Builds recorders over one PostgresLedger opened from the environment (see docs/eventsourcing-bridge.md)."""

    LEDGER_URL = "NEXUS_APP_DATABASE_URL"
    TENANT_ID = "NEXUS_TENANT_ID"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
    POLL_INTERVAL = "NEXUS_SUBSCRIPTION_POLL_INTERVAL"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        url = self.env.get(self.LEDGER_URL)
        if not url:
            raise ProgrammingError(f"set {self.LEDGER_URL} to the ledger's database URL (application role)")
        self.tenant_id = self.env.get(self.TENANT_ID, "_system")
        self.originator_id_type = cast(OriginatorIdType, self.env.get(self.ORIGINATOR_ID_TYPE, "uuid").lower())
        self.poll_interval = float(self.env.get(self.POLL_INTERVAL, "0.1"))
        self.name = self.env.name or "stored"
        with _as_persistence_errors():
            self.ledger = PostgresLedger(url)
        self._closed = False

    def transcoder(self) -> Transcoder:
        if self.env.get(self.TRANSCODER_TOPIC):
            return super().transcoder()
        return CanonicalJSONTranscoder()

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        namespace = self.name if purpose == "events" else f"{self.name}.{purpose}"
        return LedgerAggregateRecorder(
            self.ledger, namespace, tenant_id=self.tenant_id, originator_id_type=self.originator_id_type
        )

    def application_recorder(self) -> ApplicationRecorder:
        return LedgerApplicationRecorder(
            self.ledger,
            self.name,
            tenant_id=self.tenant_id,
            originator_id_type=self.originator_id_type,
            poll_interval=self.poll_interval,
        )

    def tracking_recorder(self, tracking_recorder_class: type[TrackingRecorder] | None = None) -> TrackingRecorder:
        raise NotSupportedError(
            "tracking belongs with the read model it guards: use the projection database's tracking recorder"
        )

    def process_recorder(self) -> ProcessRecorder:
        raise NotSupportedError("a process recorder must write events and tracking in one transaction; the ledger cannot")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.ledger.close()
