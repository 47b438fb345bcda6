"""The one configuration object, read from NEXUS_* environment variables at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="Admin (migration) URL of an external PostgreSQL; unset = embedded server"
    )
    app_database_url: str | None = Field(
        default=None, description="URL the application connects with; unset = database_url as role nexus_app"
    )
    app_db_password: str | None = Field(default=None, description="Password given to role nexus_app, if any")
    nats_url: str | None = Field(default=None, description="External NATS; unset = embedded nats-server")
    nats_stream: str = Field(default="NEXUS_EVENTS", description="JetStream stream carrying the ledger")
    nats_subject_prefix: str = Field(default="nexus.events", description="Subjects: <prefix>.<tenant>.<category>.<Type>")
    data_dir: Path = Field(default=Path(".nexus"), description="Embedded servers' data, signing keys")
    ledger_hash: Literal["blake3", "sha256"] = Field(default="blake3", description="Hash of a NEW ledger")
    host: str = "127.0.0.1"
    port: int = 8000
    api_processes: int = Field(default=1, ge=1, le=64, description="Processes serving the API on one port (SO_REUSEPORT)")
    checkpoint_interval_s: float = Field(default=1.0, ge=0.05)
    # How `nexus up` feeds its projections: one consumer for all of them (one fetch, one transaction
    # per batch), or one each, as the at-scale deployment's `nexus project NAME` commands do.
    projection_consumers: Literal["grouped", "separate"] = Field(
        default="grouped", description="grouped = one NATS consumer and transaction for all projections"
    )
    # How long a caught-up projection consumer lets the next batch gather: longer is fewer transactions
    # (less CPU) and more lag (docs/projections.md, "Batches").
    projection_linger_ms: float = Field(default=50.0, ge=0, le=5000, description="Projection batch linger, in ms")
    # How long a Python thread may hold the GIL while another waits (Python's default is 5 ms). The API's
    # event loop shares it with the ledger's committer and the workers; 0.5 ms cut the gateway's p90 at
    # 200 req/s from 5.8-8.5 to 4.0-4.4 ms and its p99 from 8.5-15.5 to 6.2-7.4 ms (docs/gateway.md).
    gil_switch_interval_ms: float = Field(default=0.5, gt=0, le=100, description="sys.setswitchinterval, in ms")
    # Strict recording: each inference's InferenceRequested commits before its upstream call, at the price
    # of a second commit on every response path (docs/gateway.md, "In flight, and after a crash").
    record_before_upstream: bool = Field(
        default=False, description="NEXUS_RECORD_BEFORE_UPSTREAM=on: no upstream call without a committed record"
    )
    # Each API process listens for changes to what it caches (revoked keys, erased subjects, deployments) and
    # drops its copy at once; off (behind a pooler in transaction mode, which keeps no LISTEN), copies expire
    # on their own (docs/architecture.md, "Change notices").
    change_notices: bool = Field(default=True, description="NEXUS_CHANGE_NOTICES=on|off: LISTEN for cache changes")
    # pydantic reads on/off (and true/false, 1/0) as a bool
    local_model: bool = Field(default=True, description="NEXUS_LOCAL_MODEL=on|off: serve the embedded SmolLM2 model")
    entra_authority: str = Field(
        default="", description="Microsoft Entra ID authority for Azure deployments that sign in as an app"
        " registration; empty = the one of each endpoint's cloud (public, US Government, China)")
    # browsers: origins other than the API's own that may call it with credentials (docs/auth.md, "CORS")
    cors_origins: str = Field(default="", description="Comma-separated origins, e.g. https://app.example.com; empty = none")
    # request rate limits, token buckets per process (docs/auth.md, "Rate limits"); 0 = off
    # keys serve programs (batch jobs, SDKs): the default stops a runaway loop, not a busy service
    rate_limit_key_per_minute: float = Field(default=6000, ge=0, description="Sustained requests a minute per API key")
    rate_limit_key_burst: int = Field(default=500, ge=1, description="Requests an API key may make at once")
    # users are people in the console: a dashboard fires a few dozen queries at once, then a few a second
    rate_limit_user_per_minute: float = Field(default=600, ge=0, description="Sustained requests a minute per user")
    rate_limit_user_burst: int = Field(default=120, ge=1, description="Requests a signed-in user may make at once")

    @property
    def key_dir(self) -> Path:
        return self.data_dir / "keys"
