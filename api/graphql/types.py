"""GraphQL output and input types: plain shapes of what the data layer returns, converted in one place."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

import strawberry
from strawberry.scalars import JSON

from application import graph_queries as q
from domain.checkpoint import Checkpoint
from domain.ledger import Receipt as LedgerReceipt
from projections.costs import CostLine as CostLineRow
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
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    tokens_reasoning: int
    cost_micros: int
    latency_mean_us: int | None
    latency_max_us: int | None
    p50_us: int | None
    p95_us: int | None
    p99_us: int | None

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
    requests: int
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    tokens_reasoning: int
    cost_micros: int

    @classmethod
    def of(cls, row: CostLineRow) -> CostLine:
        return cls(**{name: getattr(row, name) for name in row.__dataclass_fields__})


@strawberry.type
class CurrencyTotal:
    currency: str
    cost_micros: int


@strawberry.type
class CostReport:
    lines: list[CostLine]
    totals: list[CurrencyTotal]


@strawberry.type
class LedgerEntry:
    position: int
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

    position: int
    event_id: uuid.UUID
    tenant_id: str
    stream_id: str
    category: str
    type: str
    recorded_at: str
    payload: JSON
    entry_hash: str


@strawberry.type
class SignedCheckpoint:
    ledger_id: str
    hash_alg: str
    tree_size: int
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
    position: int
    event_id: uuid.UUID
    tree_size: int
    leaf_hash: str
    root: str
    path: list[str]


@strawberry.type
class ConsistencyProof:
    size1: int
    size2: int
    root1: str
    root2: str
    path: list[str]


@strawberry.type
class ProjectionStatus:
    name: str
    code_version: int
    active_version: int | None
    checkpoint: int
    head: int
    lag_events: int
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


@strawberry.type
class Me:
    tenant_id: str
    subject: str
    permissions: list[str]


@strawberry.type
class Receipt:
    """Proof that a command was recorded: where its event sits in the ledger and what it hashed to."""

    position: int
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
    region: str = ""
    priority: int = 0
    timeout_ms: int | None = None
    max_retries: int = 2
    api_key: str | None = strawberry.field(default=None, description="Sealed before it is recorded; never returned")


def api_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(key_id=row["key_id"], name=row["name"], scopes=list(row["scopes"]), revoked=row["revoked"],
                  issued_at=row.get("issued_at"))
