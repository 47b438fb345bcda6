"""GraphQL output and input types: plain shapes of what the data layer returns, converted in one place."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

import orjson
import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from adapters.nats import codec
from api.graphql.loaders import loaders
from api.graphql.scalars import Long
from application import graph_queries as q
from application.live_metrics import MetricsBucket as LiveBucket
from domain.checkpoint import Checkpoint
from domain.ledger import Receipt as LedgerReceipt
from domain.ledger import RecordedEvent
from projections.costs import CostLine as CostLineRow
from projections.inference_log import InferenceRecord, LogFilter
from projections.store import ProjectionStatus as StatusRow
from projections.usage import UsageBucket as BucketRow


@strawberry.enum
class Granularity(enum.Enum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


@strawberry.type
class UsageBucket:
    start: dt.datetime | None
    requests: Long
    errors: Long
    tokens_in: Long
    tokens_out: Long
    tokens_cached: Long
    tokens_reasoning: Long
    cost_micros: Long
    latency_mean_us: Long | None
    latency_max_us: Long | None
    p50_us: Long | None
    p95_us: Long | None
    p99_us: Long | None

    @classmethod
    def of(cls, row: BucketRow) -> UsageBucket:
        return cls(**row.as_dict())


@strawberry.type
class CostLine:
    day: dt.date
    provider: str
    model: str
    currency: str
    price_table_version: str
    requests: Long
    tokens_in: Long
    tokens_out: Long
    tokens_cached: Long
    tokens_reasoning: Long
    cost_micros: Long

    @classmethod
    def of(cls, row: CostLineRow) -> CostLine:
        return cls(**{name: getattr(row, name) for name in row.__dataclass_fields__})


@strawberry.type
class CurrencyTotal:
    currency: str
    cost_micros: Long


@strawberry.type
class CostReport:
    lines: list[CostLine]
    totals: list[CurrencyTotal]


@strawberry.type
class LedgerEntry:
    position: Long
    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    recorded_at: str
    payload: JSON
    metadata: JSON
    entry_hash: str
    chain_hash: str

    @classmethod
    def of(cls, e: q.LedgerEntry) -> LedgerEntry:
        return cls(**{name: getattr(e, name) for name in e.__dataclass_fields__})


@strawberry.type
class LedgerEvent:
    """An event as delivered live: the same facts as a ledger entry, plus its tenant and category."""

    position: Long
    event_id: uuid.UUID
    tenant_id: str
    stream_id: str
    category: str
    type: str
    recorded_at: str
    payload: JSON
    entry_hash: str

    @classmethod
    def of(cls, e: RecordedEvent) -> LedgerEvent:
        return cls(position=e.position, event_id=e.event_id, tenant_id=e.tenant_id, stream_id=e.stream_id,
                   category=codec.category_of(e.stream_id), type=e.type, recorded_at=e.recorded_at,
                   payload=orjson.loads(e.payload), entry_hash=e.entry_hash.hex())


@strawberry.type
class SignedCheckpoint:
    ledger_id: str
    hash_alg: str
    tree_size: Long
    root: str
    chain_head: str
    signed_at: str
    key_id: str
    signature: str

    @classmethod
    def of(cls, c: Checkpoint) -> SignedCheckpoint:
        return cls(**c.to_json())  # type: ignore[arg-type]


@strawberry.type
class InclusionProof:
    position: Long
    event_id: uuid.UUID
    tree_size: Long
    leaf_hash: str
    root: str
    path: list[str]


@strawberry.type
class ConsistencyProof:
    size1: Long
    size2: Long
    root1: str
    root2: str
    path: list[str]


@strawberry.type
class ProjectionStatus:
    name: str
    code_version: int
    active_version: int | None
    checkpoint: Long
    head: Long
    lag_events: Long
    lag_seconds: float
    stopped: bool
    last_error: str | None

    @classmethod
    def of(cls, s: StatusRow) -> ProjectionStatus:
        return cls(name=s.name, code_version=s.code_version, active_version=s.active_version, checkpoint=s.checkpoint,
                   head=s.head, lag_events=s.lag_events, lag_seconds=s.lag_seconds, stopped=s.stopped,
                   last_error=s.last_error)


@strawberry.type
class Tenant:
    tenant_id: str
    name: str
    created_at: str


@strawberry.type
class ApiKey:
    """An API key as it may be shown: never the secret, never its hash."""

    key_id: str
    name: str
    scopes: list[str]
    revoked: bool
    issued_at: str | None


@strawberry.type
class Deployment:
    name: str
    model_name: str
    provider: str
    model: str
    base_url: str | None
    region: str
    priority: int
    timeout_ms: int | None
    max_retries: int
    price: JSON
    has_credentials: bool
    credential_facts: JSON | None = strawberry.field(
        default=None, description="What may be shown about the credential: its kind (api_key, aws_key_pair,"
        " bedrock_api_key, entra_secret, entra_certificate), and identifiers such as an AWS access key id, an Entra"
        " client id, a certificate's SHA-256 thumbprint and its certificate_not_after; never a secret")


@strawberry.type
class Me:
    tenant_id: str
    subject: str
    permissions: list[str]


@strawberry.type
class Receipt:
    """Proof that a command was recorded: where its event sits in the ledger and what it hashed to."""

    position: Long
    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    entry_hash: str
    chain_hash: str

    @classmethod
    def of(cls, r: LedgerReceipt) -> Receipt:
        return cls(position=r.position, event_id=r.event_id, stream_id=r.stream_id, stream_version=r.stream_version,
                   entry_hash=r.entry_hash.hex(), chain_hash=r.chain_hash.hex())


@strawberry.type
class CreatedApiKey:
    key: ApiKey
    secret: str = strawberry.field(description="The full key `nx_...`: shown this once, never stored")
    receipt: Receipt


@strawberry.input
class EventFilter:
    category: str | None = None
    type: str | None = None
    from_position: int | None = strawberry.field(
        default=None, description="Resume here (last position seen + 1); absent: only new events")


@strawberry.input
class CreateTenantInput:
    tenant_id: str
    name: str | None = None


@strawberry.input
class CreateApiKeyInput:
    name: str
    scopes: list[str]


@strawberry.input
class PriceInput:
    input: int
    output: int
    currency: str
    version: str
    cached_input: int | None = None


@strawberry.input
class ConfigureDeploymentInput:
    name: str
    provider: str
    model: str
    price: PriceInput
    model_name: str | None = None
    base_url: str | None = None
    region: str = strawberry.field(default="", description="Recorded with every inference; for bedrock, the AWS"
                                   " region its requests are signed for")
    priority: int = 0
    timeout_ms: int | None = None
    max_retries: int = 2
    api_key: str | None = strawberry.field(default=None, description="Sealed before it is recorded; never returned."
                                           " Bedrock: a Bedrock API key, or ACCESS_KEY_ID:SECRET_ACCESS_KEY"
                                           "[:SESSION_TOKEN]. Azure: an API key, or an Entra ID app registration,"
                                           " entra:DIRECTORY:CLIENT_ID:CLIENT_SECRET, or with a certificate,"
                                           " entra-cert:DIRECTORY:CLIENT_ID:BUNDLE_BASE64 (its unencrypted"
                                           " private key and certificate as PEM, or a PKCS#12 file without a password,"
                                           " base64-encoded onto one line)")


@strawberry.enum
class InferenceStatus(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"


@strawberry.input
class InferenceFilter:
    model: str | None = None
    provider: str | None = None
    status: InferenceStatus | None = None
    since: dt.datetime | None = strawberry.field(default=None, description="Recorded at or after (inclusive)")
    until: dt.datetime | None = strawberry.field(default=None, description="Recorded before (exclusive)")
    run_id: str | None = strawberry.field(default=None, description="A NEXUS run id, or a request's correlation id")

    def as_filter(self) -> LogFilter:
        return LogFilter(self.model, self.provider, self.status.value if self.status else None, self.since,
                         self.until, self.run_id)


@strawberry.type(description="A run's graph: its events as nodes, causation links (and a consensus's inputs) as edges")
class RunGraph:
    run_id: str
    status: str
    nodes: JSON
    edges: JSON
    cost_micros: JSON = strawberry.field(description="Per currency")
    inferences: Long


@strawberry.type(description="One inference (request) as the inference log holds it")
class Inference:
    id: strawberry.ID = strawberry.field(description="The inference (request) id: its stream is inference-<id>")
    event_id: uuid.UUID = strawberry.field(description="The outcome event (InferenceCompleted or InferenceFailed)")
    position: Long
    status: InferenceStatus
    provider: str
    model: str
    deployment: str
    region: str
    kind: str | None
    tokens_in: Long
    tokens_out: Long
    tokens_cached: Long
    tokens_reasoning: Long
    cost_micros: Long
    currency: str | None
    price_version: str | None
    latency_ms: float
    ttft_ms: float | None
    run_id: str | None = strawberry.field(description="The correlation id: a NEXUS run's id, else the request's")
    causation_id: str | None = strawberry.field(description="What asked for this inference (its request's cause)")
    requested_event_id: str | None
    error_reason: str | None
    error_detail: str | None
    recorded_at: dt.datetime

    @strawberry.field(description="The outcome's ledger entry: the receipt (needs ledger.read)")
    async def entry(self, info: Info) -> LedgerEntry | None:
        found = await (await loaders(info)).entries.load(self.event_id)
        return LedgerEntry.of(found) if found else None

    @strawberry.field(description="The deployment as it is configured now (None once removed)")
    async def deployment_info(self, info: Info) -> Deployment | None:
        found = await (await loaders(info)).deployments.load(self.deployment)
        return Deployment(**found) if found else None

    @strawberry.field(description="The run this inference belongs to, from causation links")
    async def run_graph(self, info: Info) -> RunGraph | None:
        if self.run_id is None:
            return None
        found = await (await loaders(info)).run_graphs.load(self.run_id)
        return RunGraph(**found) if found else None

    @classmethod
    def of(cls, r: InferenceRecord) -> Inference:
        return cls(
            id=strawberry.ID(r.inference_id), event_id=r.event_id, position=r.position,
            status=InferenceStatus(r.status), provider=r.provider, model=r.model, deployment=r.deployment,
            region=r.region, kind=r.kind, tokens_in=r.tokens_in, tokens_out=r.tokens_out,
            tokens_cached=r.tokens_cached, tokens_reasoning=r.tokens_reasoning, cost_micros=r.cost_micros,
            currency=r.currency, price_version=r.price_version, latency_ms=r.latency_us / 1000,
            ttft_ms=None if r.ttft_us is None else r.ttft_us / 1000, run_id=r.run_id, causation_id=r.causation_id,
            requested_event_id=r.requested_event_id, error_reason=r.error_reason, error_detail=r.error_detail,
            recorded_at=r.recorded_at,
        )


@strawberry.type
class InferenceEdge:
    cursor: str
    node: Inference


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="A page of the inference log, newest first (Relay cursor connection)")
class InferenceConnection:
    edges: list[InferenceEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: q.InferencePage) -> InferenceConnection:
        edges = [InferenceEdge(cursor=q.cursor_of(r.position), node=Inference.of(r)) for r in page.rows]
        return cls(edges=edges, page_info=PageInfo(has_next_page=page.has_next,
                                                    end_cursor=edges[-1].cursor if edges else None))


@strawberry.type(description="Live metrics of one time bucket so far")
class MetricsBucket:
    bucket_start: dt.datetime
    inferences: Long
    errors: Long
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    cost_micros: Long
    tokens_in: Long
    tokens_out: Long

    @classmethod
    def of(cls, b: LiveBucket) -> MetricsBucket:
        return cls(**{name: getattr(b, name) for name in b.__dataclass_fields__})


@strawberry.input
class StartNexusRunInput:
    task: str
    planner_model: str | None = None
    synthesis_model: str | None = None
    consensus_threshold: float | None = None
    timeout: float = strawberry.field(default=60.0, description="Seconds per inference")


@strawberry.type
class NexusRunStarted:
    run_id: str
    from_position: int = strawberry.field(description="Pass to nexusRun to see the run from its first event")


def api_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(key_id=row["key_id"], name=row["name"], scopes=list(row["scopes"]), revoked=row["revoked"],
                  issued_at=row.get("issued_at"))
