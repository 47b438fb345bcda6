"""The one door the API goes through: every read and write takes an Actor and is scoped to its tenant.

Resolvers never see a connection, a ledger or a service; they get a `TenantReader` or `TenantCommands`
built for the caller. Each method checks its permission first and filters by `actor.tenant_id` itself,
so a resolver cannot forget either (tests/property/test_tenant_isolation.py holds it to that).

Reads come from the read models (projections/usage, costs, audit_index, inference_log) and from indexed
lookups by stream or event id; nothing here scans the ledger. The batch methods (`*_by_*`) serve the
API's DataLoaders: one call, a constant number of queries, for a whole page of nested fields.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import collections
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select

from application import live_metrics
from application.deployments import DeploymentService
from application.gateway import GatewayError
from application.identity import IdentityService
from application.orchestrator import Orchestrator, RunFailed, RunRequest
from application.ports import CheckpointStore, Ledger
from domain import identity
from domain.checkpoint import Checkpoint
from domain.deployments import DEFERRED
from domain.identity import NewApiKey
from domain.inference import OUTCOMES
from domain.ledger import Receipt, RecordedEvent
from domain.orchestration import RUN_TERMINAL, run_graph, run_stream
from domain.pricing import Price
from domain.rbac import SCOPE_PERMISSIONS, Actor, PermissionDenied
from projections import audit_index, costs, inference_log, usage
from projections.inference_log import InferenceRecord, LogFilter
from projections.registry import DEPLOYED
from projections.store import ProjectionStatus, ProjectionStore

log = logging.getLogger(__name__)
MAX_PAGE = 500  # pagination cap: no single request pulls more rows than this
MAX_RUN_INFERENCES = 2000  # a run graph shows at most this many inferences
INFERENCE_LOG_PERMISSION = "costs.read"  # each row carries the inference's cost


class NotFound(LookupError):
    """The thing does not exist, or is another tenant's (the caller cannot tell which, by design)."""


class Unavailable(RuntimeError):
    """A source the request needs is not there right now (e.g. the event stream before the relay started)."""


class InvalidArgument(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class EventFeed(abc.ABC):
    """Live ledger events (the NATS stream), filtered by tenant before anything else."""

    @abc.abstractmethod
    def tail(self, tenant_id: str, category: str | None, event_type: str | None,
             from_position: int | None) -> AsyncIterator[RecordedEvent]:
        """The tenant's events in position order from `from_position` (None: only new ones), no gap, no repeat."""

    def follow(self, tenant_id: str, category: str, from_position: int) -> AsyncIterator[RecordedEvent]:
        """New events of a tenant's category for a live view; a feed may share one source among followers,
        so a follower that joins a running source starts where it is (never before `from_position`)."""
        return self.tail(tenant_id, category, None, from_position)


@dataclass(frozen=True)
class Sources:
    """What the readers and commands read from and write to; built once at start-up."""

    ledger: Ledger
    checkpoints: CheckpointStore
    projections: ProjectionStore
    identity: IdentityService
    deployments: DeploymentService | None
    feed: EventFeed | None = None
    orchestrator: Orchestrator | None = None  # NEXUS runs (application/orchestrator.py)


@dataclass(frozen=True)
class LedgerEntry:
    position: int
    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    recorded_at: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    entry_hash: str
    chain_hash: str


@dataclass(frozen=True)
class InclusionProof:
    position: int
    event_id: uuid.UUID
    tree_size: int
    leaf_hash: str
    root: str
    path: list[str]


@dataclass(frozen=True)
class ConsistencyProof:
    size1: int
    size2: int
    root1: str
    root2: str
    path: list[str]


@dataclass(frozen=True)
class InferencePage:
    rows: list[InferenceRecord]
    has_next: bool


def cursor_of(position: int) -> str:
    """An opaque page cursor (clients must not build or read them)."""
    return base64.urlsafe_b64encode(f"inference:{position}".encode()).decode()


def _position_of(cursor: str) -> int:
    try:
        kind, _, position = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind == "inference" and position.isdigit():
            return int(position)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise InvalidArgument("after", "not a cursor this API returned (use pageInfo.endCursor)")


def _page(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


def _entry(e: RecordedEvent) -> LedgerEntry:
    return LedgerEntry(e.position, e.event_id, e.stream_id, e.stream_version, e.type, e.schema_version,
                       e.recorded_at, orjson.loads(e.payload), orjson.loads(e.metadata), e.entry_hash.hex(),
                       e.chain_hash.hex())


class TenantReader:
    def __init__(self, actor: Actor, sources: Sources) -> None:
        self.actor = actor
        self._s = sources

    @property
    def tenant(self) -> str:
        return self.actor.tenant_id

    # --- usage and costs ---------------------------------------------------------------------------

    def usage_timeseries(self, granularity: usage.Granularity, start: dt.datetime, end: dt.datetime,
                         provider: str | None = None, model: str | None = None) -> list[usage.UsageBucket]:
        self.actor.require("usage.read")
        if granularity not in usage.GRANULARITIES:
            raise InvalidArgument("granularity", f"must be one of {list(usage.GRANULARITIES)}")
        _check_range(start, end)
        with self._s.projections.reading("usage") as conn:
            return usage.timeseries(conn, self.tenant, granularity, start, end, provider, model)[:MAX_PAGE * 4]

    def usage_summary(self, start: dt.datetime, end: dt.datetime, provider: str | None = None,
                      model: str | None = None) -> usage.UsageBucket:
        self.actor.require("usage.read")
        _check_range(start, end)
        with self._s.projections.reading("usage") as conn:
            return usage.summary(conn, self.tenant, start, end, provider, model)

    def cost_report(self, first_day: dt.date, last_day: dt.date, model: str | None = None) -> list[costs.CostLine]:
        self.actor.require("costs.read")
        if last_day < first_day:
            raise InvalidArgument("lastDay", "must not be before firstDay")
        with self._s.projections.reading("costs") as conn:
            return costs.report(conn, self.tenant, first_day, last_day, model)

    def cost_totals(self, first_day: dt.date, last_day: dt.date) -> dict[str, int]:
        self.actor.require("costs.read")
        with self._s.projections.reading("costs") as conn:
            return costs.totals(conn, self.tenant, first_day, last_day)

    # --- the ledger, through the audit index -----------------------------------------------------

    def entries_of_stream(self, stream_id: str, from_version: int = 1, limit: int = 100) -> list[LedgerEntry]:
        self.actor.require("ledger.read")
        with self._s.projections.reading("audit_index") as conn:
            indexed = audit_index.stream(conn, self.tenant, stream_id, from_version, _page(limit))
        return self._bodies([i.event_id for i in indexed])

    def entries_from(self, from_position: int = 1, limit: int = 100) -> list[LedgerEntry]:
        self.actor.require("ledger.read")
        t = audit_index.entries
        with self._s.projections.reading("audit_index") as conn:
            ids = conn.execute(
                select(t.c.event_id).where(t.c.tenant_id == self.tenant, t.c.position >= from_position)
                .order_by(t.c.position).limit(_page(limit))
            ).scalars().all()
        return self._bodies(list(ids))

    def _bodies(self, event_ids: list[uuid.UUID]) -> list[LedgerEntry]:
        if not event_ids:
            return []
        # The index already filtered by tenant; checking again costs nothing and guards the index.
        return [_entry(e) for e in self._s.ledger.find(event_ids) if e.tenant_id == self.tenant]

    # --- checkpoints and proofs (tree heads are public; which leaf is yours is not) ----------------

    def checkpoints(self, limit: int = 20, at_most_size: int | None = None) -> list[Checkpoint]:
        self.actor.require("proofs.read")
        return self._s.checkpoints.list(_page(limit), at_most_size)

    def inclusion_proof(self, event_id: uuid.UUID, tree_size: int | None = None) -> InclusionProof:
        self.actor.require("proofs.read")
        with self._s.projections.reading("audit_index") as conn:
            found = audit_index.locate(conn, self.tenant, event_id)
        if found is None:
            raise NotFound(f"no event {event_id} in tenant {self.tenant!r}")
        size = tree_size if tree_size is not None else self._s.ledger.head().size
        if not found.position <= size <= self._s.ledger.head().size:
            raise InvalidArgument("treeSize", f"must be between the event's position {found.position} and the "
                                              f"ledger size {self._s.ledger.head().size}, got {size}")
        [event] = self._s.ledger.find([event_id])
        path = self._s.ledger.inclusion_proof(found.position, size)
        return InclusionProof(found.position, event_id, size, event.entry_hash.hex(),
                              self._s.ledger.root_at(size).hex(), [h.hex() for h in path])

    def consistency_proof(self, size1: int, size2: int) -> ConsistencyProof:
        self.actor.require("proofs.read")
        head = self._s.ledger.head().size
        if not 1 <= size1 <= size2 <= head:
            raise InvalidArgument("size1", f"need 1 <= size1 <= size2 <= {head} (the ledger size), got {size1}, {size2}")
        path = self._s.ledger.consistency_proof(size1, size2)
        return ConsistencyProof(size1, size2, self._s.ledger.root_at(size1).hex(), self._s.ledger.root_at(size2).hex(),
                                [h.hex() for h in path])

    def live_events(self, category: str | None, event_type: str | None,
                    from_position: int | None) -> AsyncIterator[RecordedEvent]:
        """The tenant's events as they are recorded; the tenant is this reader's, never an argument."""
        self.actor.require("ledger.read")
        if from_position is not None and from_position < 1:
            raise InvalidArgument("fromPosition", f"must be at least 1, got {from_position}")
        if self._s.feed is None:
            raise NotFound("live events are not available in this process (no NATS configured)")
        if from_position is None:  # "new events only" means: after the head as it is now, whatever the stream's state
            from_position = self._s.ledger.head().size + 1
        return self._s.feed.tail(self.tenant, category, event_type, from_position)

    # --- the inference log and its runs ------------------------------------------------------------

    def inferences(self, first: int = 50, after: str | None = None, f: LogFilter = inference_log.ALL) -> InferencePage:
        """The tenant's inferences newest first, `first` at a time; `after` is the previous page's end cursor."""
        self.actor.require(INFERENCE_LOG_PERMISSION)
        if first < 1:
            raise InvalidArgument("first", f"must be at least 1, got {first}")
        first = min(first, MAX_PAGE)  # the cap: asking for more is answered with a full page and a cursor
        before = _position_of(after) if after is not None else None
        if f.since is not None and f.until is not None and f.until <= f.since:
            raise InvalidArgument("filter.until", "must be after since")
        with self._s.projections.reading("inference_log") as conn:
            rows, more = inference_log.page(conn, self.tenant, first, before, f)
        return InferencePage(rows, more)

    def inferences_by_id(self, inference_ids: Sequence[str]) -> list[InferenceRecord | None]:
        """The tenant's inferences with these ids, in the same order (None where there is none of the tenant's)."""
        self.actor.require(INFERENCE_LOG_PERMISSION)
        with self._s.projections.reading("inference_log") as conn:
            found = inference_log.by_inference_ids(conn, self.tenant, list(dict.fromkeys(inference_ids)))
        return [found.get(i) for i in inference_ids]

    def entries_by_id(self, event_ids: Sequence[uuid.UUID]) -> list[LedgerEntry | None]:
        """The tenant's ledger entries with these ids, in the same order: one indexed query."""
        self.actor.require("ledger.read")
        found = {e.event_id: e for e in self._bodies(list(dict.fromkeys(event_ids)))}
        return [found.get(i) for i in event_ids]

    def deployments_by_name(self, names: Sequence[str]) -> list[dict[str, Any] | None]:
        """The tenant's deployments with these names as they are configured now (None: removed or unknown)."""
        self.actor.require("deployments.read")
        current = {d["name"]: d for d in (self._s.deployments.list(self.tenant) if self._s.deployments else [])}
        return [current.get(n) for n in names]

    def run_graphs(self, run_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Run graphs (domain.orchestration.run_graph) from causation links, in three queries for any number of runs.

        A run is its `run-<id>` stream (NEXUS runs; found through the audit index) plus the inferences
        that carry its id as correlation id (the inference log): their events come from the ledger by id.
        """
        self.actor.require(INFERENCE_LOG_PERMISSION)
        wanted = list(dict.fromkeys(run_ids))
        table, entries = inference_log.log, audit_index.entries
        with self._s.projections.reading("inference_log") as conn:
            rows = conn.execute(select(table.c.event_id, table.c.requested_event_id)
                                .where(table.c.tenant_id == self.tenant, table.c.run_id.in_(wanted))
                                .limit(MAX_RUN_INFERENCES)).all()
        ids = [event_id for event_id, _ in rows] + [_uuid(requested) for _, requested in rows]
        with self._s.projections.reading("audit_index") as conn:
            ids += conn.execute(select(entries.c.event_id).where(
                entries.c.tenant_id == self.tenant, entries.c.stream_id.in_([run_stream(r) for r in wanted]))
                .limit(MAX_RUN_INFERENCES)).scalars().all()
        events: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for e in self._s.ledger.find([i for i in dict.fromkeys(ids) if i is not None]) if ids else []:
            meta = orjson.loads(e.metadata)
            if e.tenant_id == self.tenant and meta.get("correlation_id") in wanted:
                events[meta["correlation_id"]].append({
                    "event_id": str(e.event_id), "type": e.type, "stream_id": e.stream_id, "position": e.position,
                    "metadata": meta, "payload": orjson.loads(e.payload)})
        return [run_graph(r, events[r]) if events.get(r) else None for r in run_ids]

    def live_inferences(self, f: LogFilter = inference_log.ALL) -> AsyncIterator[InferenceRecord]:
        """The tenant's inferences as their outcomes are recorded (from the event feed, not the database)."""
        self.actor.require(INFERENCE_LOG_PERMISSION)
        return _live_records(self._tail_inferences(), f)

    def live_metrics(self, bucket_seconds: int = 10) -> AsyncIterator[live_metrics.MetricsBucket]:
        """The tenant's live bucket (requests, errors, percentiles, cost, tokens), at most once a second."""
        self.actor.require("usage.read")
        if not 1 <= bucket_seconds <= 3600:
            raise InvalidArgument("bucketSeconds", f"must be between 1 and 3600, got {bucket_seconds}")
        return live_metrics.buckets(_live_records(self._tail_inferences(), inference_log.ALL), bucket_seconds)

    def live_run(self, run_id: str, from_position: int | None = None) -> AsyncIterator[RecordedEvent]:
        """A NEXUS run's events (its own stream and its inferences') as recorded, until it ends."""
        self.actor.require(INFERENCE_LOG_PERMISSION)
        if from_position is not None and from_position < 1:
            raise InvalidArgument("fromPosition", f"must be at least 1, got {from_position}")
        if self._s.feed is None:
            raise NotFound("live events are not available in this process (no NATS configured)")
        start = from_position if from_position is not None else self._s.ledger.head().size + 1
        return _run_events(self._s.feed.tail(self.tenant, None, None, start), run_id)

    def _tail_inferences(self) -> AsyncIterator[RecordedEvent]:
        if self._s.feed is None:
            raise NotFound("live events are not available in this process (no NATS configured)")
        return self._s.feed.follow(self.tenant, "inference", self._s.ledger.head().size + 1)

    def projection_status(self) -> list[ProjectionStatus]:
        self.actor.require("projections.read")
        return self._s.projections.status(DEPLOYED)

    # --- identity and configuration ----------------------------------------------------------------

    def own_tenant(self) -> dict[str, Any]:
        self.actor.require("tenant.read")
        events = self._s.ledger.read_stream(identity.tenant_stream(self.tenant))
        created = next((e for e in events if e.type == "TenantCreated"), None)
        if created is None:
            raise NotFound(f"no tenant {self.tenant!r}")
        return {"tenant_id": self.tenant, "name": orjson.loads(created.payload)["name"],
                "created_at": created.recorded_at}

    def api_keys(self) -> list[dict[str, Any]]:
        """The tenant's keys from the audit index (streams `apikey-*` of this tenant); never a secret or hash."""
        self.actor.require("apikeys.read")
        t = audit_index.entries
        with self._s.projections.reading("audit_index") as conn:
            ids = conn.execute(
                select(t.c.event_id).where(t.c.tenant_id == self.tenant, t.c.stream_id.like("apikey-%"))
                .order_by(t.c.position).limit(MAX_PAGE * 10)
            ).scalars().all()
        keys: dict[str, dict[str, Any]] = {}
        for e in self._s.ledger.find(list(ids)) if ids else []:
            if e.tenant_id != self.tenant:
                continue
            p = orjson.loads(e.payload)
            if e.type == "ApiKeyIssued":
                keys[p["key_id"]] = {"key_id": p["key_id"], "name": p["name"], "scopes": p["scopes"],
                                     "revoked": False, "issued_at": e.recorded_at}
            elif e.type == "ApiKeyRevoked" and p["key_id"] in keys:
                keys[p["key_id"]]["revoked"] = True
        return list(keys.values())

    def deployments(self) -> list[dict[str, Any]]:
        self.actor.require("deployments.read")
        if self._s.deployments is None:
            return []
        return self._s.deployments.list(self.tenant)

    def recording_mode(self) -> str:
        self.actor.require("deployments.read")
        if self._s.deployments is None:
            return DEFERRED
        return self._s.deployments.recording(self.tenant)


def _uuid(text: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


LIVE_CAUSES = 10_000  # InferenceRequested causes remembered while their outcome is awaited


async def _live_records(events: AsyncIterator[RecordedEvent], f: LogFilter) -> AsyncIterator[InferenceRecord]:
    """Outcome events as log records, with their cause taken from the InferenceRequested seen before them."""
    causes: collections.OrderedDict[str, str | None] = collections.OrderedDict()
    async for e in events:
        if e.type == "InferenceRequested":
            causes[orjson.loads(e.payload)["request_id"]] = inference_log.requested_cause(e)
            if len(causes) > LIVE_CAUSES:  # outcomes that never come must not grow this forever
                causes.popitem(last=False)
        elif e.type in OUTCOMES:
            p = orjson.loads(e.payload)
            found = inference_log.record(e, p, causes.pop(p["request_id"], None))
            if f.matches(found):
                yield found


async def _run_events(events: AsyncIterator[RecordedEvent], run_id: str) -> AsyncIterator[RecordedEvent]:
    stream = run_stream(run_id)
    async for e in events:
        if e.stream_id == stream or orjson.loads(e.metadata).get("correlation_id") == run_id:
            yield e
            if e.stream_id == stream and e.type in RUN_TERMINAL:
                return


def _check_range(start: dt.datetime, end: dt.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidArgument("start", "times need a zone offset (RFC 3339, e.g. 2026-11-26T00:00:00Z)")
    if end <= start:
        raise InvalidArgument("end", "must be after start")
    if end - start > dt.timedelta(days=400):
        raise InvalidArgument("end", "a range spans at most 400 days")


async def _finish(orchestrator: Orchestrator, ctx: Any) -> None:
    try:
        await orchestrator.run(ctx)
    except RunFailed:
        pass  # recorded as OrchestrationFailed: watchers see it
    except Exception:
        log.exception("NEXUS run %s failed", ctx.request.run_id)


class TenantCommands:
    """Commands on behalf of an actor: permission first, then the service, with the actor recorded."""

    def __init__(self, actor: Actor, sources: Sources, platform_tenant: str) -> None:
        self.actor = actor
        self._s = sources
        self._platform = platform_tenant

    def create_tenant(self, tenant_id: str, name: str | None) -> Receipt:
        self.actor.require("tenants.create")
        return self._s.identity.create_tenant(tenant_id, name, actor=self.actor.subject)

    def create_api_key(self, name: str, scopes: list[str]) -> tuple[NewApiKey, Receipt]:
        self.actor.require("apikeys.write")
        valid = identity.validate_scopes(scopes)
        # No escalation: a key can do at most what its creator can.
        for scope in valid:
            missing = SCOPE_PERMISSIONS[scope] - self.actor.permissions
            if missing:
                raise PermissionDenied(sorted(missing)[0], self.actor.tenant_id)
        return self._s.identity.issue_key(self.actor.tenant_id, valid, name, actor=self.actor.subject)

    def revoke_api_key(self, key_id: str, reason: str) -> Receipt:
        self.actor.require("apikeys.write")
        return self._s.identity.revoke_key(self.actor.tenant_id, key_id, reason, actor=self.actor.subject)

    def configure_deployment(self, *, price: Price, **fields: Any) -> Receipt:
        self.actor.require("deployments.write")
        return self._service().configure(self.actor.tenant_id, price=price, actor=self.actor.subject, **fields)

    def set_recording_mode(self, mode: str) -> Receipt:
        self.actor.require("deployments.write")
        return self._service().set_recording(self.actor.tenant_id, mode, actor=self.actor.subject)

    def remove_deployment(self, name: str) -> Receipt:
        self.actor.require("deployments.write")
        return self._service().remove(self.actor.tenant_id, name, actor=self.actor.subject)

    async def start_nexus_run(self, task: str, planner_model: str | None = None, synthesis_model: str | None = None,
                              threshold: float | None = None, timeout_s: float = 60.0) -> tuple[str, int]:
        """Start a NEXUS run in the background; (its run id, the ledger position its events start after).

        The models are resolved first (an unknown one is NOT_FOUND and records nothing); the run then goes
        on in this process whether or not anyone watches it (`live_run`, the GraphQL `nexusRun`).
        """
        self.actor.require("inference.run")
        orchestrator = self._s.orchestrator
        if orchestrator is None:
            raise Unavailable("NEXUS runs are not available in this process")
        if not task.strip() or len(task) > 32_000:
            raise InvalidArgument("task", "must hold 1 to 32,000 characters")
        if threshold is not None and not 0 < threshold <= 1:
            raise InvalidArgument("consensusThreshold", f"must be in (0, 1], got {threshold}")
        if not 0 < timeout_s <= 600:
            raise InvalidArgument("timeout", f"must be in (0, 600] seconds, got {timeout_s}")
        subject = self.actor.subject.partition(":")[2] or self.actor.subject  # key:<id> -> the key id
        extra = {} if threshold is None else {"threshold": threshold}
        run = RunRequest(tenant_id=self.actor.tenant_id, key_id=subject, subject_id=subject, task=task,
                         planner_model=planner_model, synthesis_model=synthesis_model, timeout_s=timeout_s, **extra)
        try:
            ctx = await orchestrator.prepare(run)
        except GatewayError as exc:
            raise NotFound(exc.message) if exc.status == 404 else InvalidArgument("input", exc.message) from None
        start = await asyncio.to_thread(lambda: self._s.ledger.head().size + 1)
        running = asyncio.ensure_future(_finish(orchestrator, ctx))
        orchestrator.background.add(running)
        running.add_done_callback(orchestrator.background.discard)
        return run.run_id, start

    def _service(self) -> DeploymentService:
        if self._s.deployments is None:
            raise NotFound("deployments are not configured in this process")
        return self._s.deployments
