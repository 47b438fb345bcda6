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
    checkpoint_interval_s: float = Field(default=1.0, ge=0.05)
    # pydantic reads on/off (and true/false, 1/0) as a bool
    local_model: bool = Field(default=True, description="NEXUS_LOCAL_MODEL=on|off: serve the embedded SmolLM2 model")

    @property
    def key_dir(self) -> Path:
        return self.data_dir / "keys"
