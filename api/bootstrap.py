"""Wires adapters to the application. Nothing connects at import time; everything happens here."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.embedded import start_embedded_nats, start_embedded_postgres
from adapters.keystore import FileKeyStore
from adapters.oidc import connect as connect_identity_provider
from adapters.postgres.change_notices import PostgresChangeNotices
from adapters.postgres.checkpoint_store import PostgresCheckpointStore
from adapters.postgres.credentials import PostgresCredentialStore
from adapters.postgres.keystore import PostgresKeyStore, load_master_key
from adapters.postgres.ledger_store import PostgresLedger
from adapters.postgres.migrate import APP_ROLE, migrate
from adapters.postgres.spending_exchange import PostgresSpendingExchange
from adapters.providers.entra import EntraTokens
from adapters.providers.litellm_provider import LitellmProvider
from adapters.providers.openai_compatible import OpenAICompatibleProvider
from adapters.providers.tokens import token_counter
from adapters.secrets import AesGcmCredentialSealer
from api.settings import Settings
from application.deployments import DeploymentService
from application.gateway import Gateway, GatewayConfig
from application.identity import IdentityService
from application.ports import ChangeNotices, SpendingExchange
from application.privacy import PrivacyService
from application.sessions import SessionService, load_jwt_key
from application.shared_budget import bucket_id_secret
from application.signer import CheckpointSigner
from application.sso import SsoService
from application.users import UserService
from domain.deployments import WIRE_ANTHROPIC, WIRE_BEDROCK, WIRE_GEMINI, WIRE_OPENAI


def app_url_for(admin_url: str, password: str | None = None) -> str:
    """The same server and database, as the least-privileged application role."""
    params = conninfo_to_dict(admin_url)
    params["user"] = APP_ROLE
    params.pop("password", None)
    if password:
        params["password"] = password
    return make_conninfo(**params)  # type: ignore[arg-type]


@dataclass
class Database:
    admin_url: str
    app_url: str


def prepare_database(settings: Settings) -> Database:
    """Start the embedded server if none is configured, apply migrations, create the ledger."""
    admin_url = settings.database_url or start_embedded_postgres(settings.data_dir)
    migrate(admin_url, settings.app_db_password)
    app_url = settings.app_database_url or app_url_for(admin_url, settings.app_db_password)
    PostgresLedger.create(admin_url, settings.ledger_hash)
    return Database(admin_url, app_url)


@dataclass
class Container:
    settings: Settings
    database: Database
    ledger: PostgresLedger
    checkpoints: PostgresCheckpointStore
    signer: CheckpointSigner
    identity: IdentityService
    privacy: PrivacyService

    nats_process: subprocess.Popen[bytes] | None = None
    nats_url: str | None = None
    deployments: DeploymentService | None = None
    gateway: Gateway | None = None
    users: UserService | None = None
    sessions: SessionService | None = None
    credentials: PostgresCredentialStore | None = None
    sso: SsoService | None = None
    change_notices: ChangeNotices | None = None  # followed by each API process (api/change_notices.py)
    spending_exchange: SpendingExchange | None = None  # rate limits shared by the API processes (api/ratelimit.py)
    bucket_id_secret: bytes = b""  # their buckets' ids (application/shared_budget.py)

    def close(self) -> None:
        self.ledger.close()
        if self.credentials is not None:
            self.credentials.close()
        self.privacy.close()
        if self.nats_process is not None:
            self.nats_process.terminate()
            self.nats_process.wait(timeout=10)


def bootstrap(settings: Settings | None = None) -> Container:
    settings = settings or Settings()
    database = prepare_database(settings)
    ledger = PostgresLedger(database.app_url)
    checkpoints = PostgresCheckpointStore(database.app_url)
    signer = CheckpointSigner(ledger, FileKeyStore(settings.key_dir), checkpoints)
    privacy = PrivacyService(PostgresKeyStore(database.app_url, load_master_key(settings.key_dir)), ledger)
    container = Container(settings, database, ledger, checkpoints, signer, IdentityService(ledger), privacy)
    wire_gateway(container)
    wire_auth(container)
    if settings.change_notices:
        container.change_notices = PostgresChangeNotices(database.app_url)
        container.spending_exchange = PostgresSpendingExchange(database.app_url)  # LISTEN too: the same switch
    return container


def wire_auth(container: Container) -> None:
    """Users (events in the ledger) and sessions (hashes and refresh tokens in schema `auth`); docs/auth.md."""
    from api.graphql.settings import GraphQLSettings

    container.credentials = PostgresCredentialStore(container.database.app_url)
    container.users = UserService(container.ledger, container.credentials)
    signing_key = load_jwt_key(container.settings.key_dir)
    container.sessions = SessionService(container.users, container.credentials, signing_key,
                                        platform_tenant=GraphQLSettings().platform_tenant)
    container.bucket_id_secret = bucket_id_secret(signing_key)
    sealer = AesGcmCredentialSealer(load_master_key(container.settings.key_dir))  # client secrets, as deployments'
    container.sso = SsoService(container.ledger, sealer, container.users, container.sessions, container.credentials,
                               connect_identity_provider)


def wire_gateway(container: Container) -> None:
    """Deployments (credentials sealed under the master key) and the gateway with its two provider adapters."""
    sealer = AesGcmCredentialSealer(load_master_key(container.settings.key_dir))
    container.deployments = DeploymentService(container.ledger, sealer)
    direct = OpenAICompatibleProvider(entra=EntraTokens(container.settings.entra_authority))
    translated = LitellmProvider()
    providers = {WIRE_OPENAI: direct, WIRE_ANTHROPIC: translated, WIRE_GEMINI: translated, WIRE_BEDROCK: translated}
    container.gateway = Gateway(container.ledger, container.deployments, providers, privacy=container.privacy,
                                token_counter=token_counter,
                                config=GatewayConfig(record_before_upstream=container.settings.record_before_upstream))


def nats_url_for(container: Container) -> str:
    """The configured NATS, or an embedded nats-server started now and stopped with the container."""
    if container.nats_url is None:
        if container.settings.nats_url:
            container.nats_url = container.settings.nats_url
        else:
            container.nats_process, container.nats_url = start_embedded_nats(container.settings.data_dir)
    return container.nats_url
