"""The gateway under test: a real container on a test database, served by uvicorn, in front of fake upstreams.

Test modules import the fixtures `upstreams` (session: one fake-upstream server) and `gw` (per test: a
fresh database, tenant `acme` with an inference+read key, the NexusAI app on its own port).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from api.app import create_app
from api.bootstrap import Container, bootstrap
from api.settings import Settings
from application.gateway import GatewayConfig
from domain.ledger import RecordedEvent
from domain.pricing import Price
from tests.fakes.server import ServerThread
from tests.fakes.upstream import BEDROCK_KEY_ID, BEDROCK_SECRET, Upstreams, upstream_app

UPSTREAM_CREDENTIALS = {"bedrock": f"{BEDROCK_KEY_ID}:{BEDROCK_SECRET}"}
"""What each fake upstream accepts, by provider (default: any key, here "sk-upstream-secret")."""
PRICE = Price(input=2_500_000, output=10_000_000, currency="USD", version="test-2026-11")
"""USD 2.50 per 1M input tokens, 10.00 per 1M output tokens."""


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    fakes = Upstreams()
    with ServerThread(upstream_app(fakes)) as server:
        fakes.url = server.url
        yield fakes


@dataclass
class Gateway:
    url: str
    token: str
    container: Container
    upstreams: Upstreams
    tenant: str = "acme"

    def deploy(self, name: str, *, provider: str = "openai", model_name: str = "gpt-test", upstream: str | None = None,
               model: str | None = None, price: Price = PRICE, api_key: str | None = "",
               tenant: str | None = None, **options: Any) -> str:
        """A deployment of `model_name` on the fake upstream `upstream` (default: a fresh one); returns its name.

        `api_key` "" is the credential the provider's fake accepts; None deploys without one."""
        upstream = upstream or unique(name)
        if api_key == "":
            api_key = UPSTREAM_CREDENTIALS.get(provider, "sk-upstream-secret")
        if provider == "bedrock":
            options.setdefault("region", "us-east-1")
        suffix = {"anthropic": "", "gemini": "/v1beta", "bedrock": "",
                  "azure": "/openai/deployments/gpt-4o-eu?api-version=2024-10-21"}.get(provider, "/v1")
        self.container.deployments.configure(
            tenant or self.tenant, name=name, provider=provider, model=model or f"{provider}-model-{name}",
            model_name=model_name, base_url=self.upstreams.base(upstream, suffix), price=price, api_key=api_key,
            **options,
        )
        return upstream

    def script(self, upstream: str):  # type: ignore[no-untyped-def]
        return self.upstreams.script(upstream)

    def client(self, token: str | None = None, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=token or self.token, max_retries=0, **options)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {self.token}"}, timeout=30)

    def events(self, *types: str) -> list[RecordedEvent]:
        found = []
        position = 1
        while batch := self.container.ledger.read(position, 1000):
            found += [e for e in batch if not types or e.type in types]
            position = batch[-1].position + 1
        return found

    def payloads(self, *types: str) -> list[dict[str, Any]]:
        return [orjson.loads(e.payload) for e in self.events(*types)]

    def wait_for(self, event_type: str, count: int = 1, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.payloads(event_type)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def size(self) -> int:
        return self.container.ledger.head().size


def start_gateway(database: Any, tmp_path: Path, upstreams: Upstreams) -> tuple[Gateway, ServerThread]:
    container = bootstrap(Settings(database_url=database.admin_url, data_dir=tmp_path / "data",
                                   entra_authority=f"{upstreams.url}/entra"))
    # Short backoffs keep the retry tests fast; the rule itself is domain.deployments.backoff_s.
    container.gateway.config = GatewayConfig(default_timeout_s=10.0, backoff_base_s=0.01, backoff_cap_s=0.05)
    container.identity.create_tenant("acme")
    key, _ = container.identity.issue_key("acme", ["inference", "read"], "tests")
    server = ServerThread(create_app(container), lifespan="on").start()
    return Gateway(server.url, key.token, container, upstreams), server


@pytest.fixture
def no_change_notices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Request it before `gw`: a gateway that hears no change notices (NEXUS_CHANGE_NOTICES=off), as a process
    does while its listening connection is down, or before a notice reaches it."""
    monkeypatch.setenv("NEXUS_CHANGE_NOTICES", "off")


@pytest.fixture
def gw(database: Any, tmp_path: Path, upstreams: Upstreams) -> Iterator[Gateway]:
    gateway, server = start_gateway(database, tmp_path, upstreams)
    try:
        yield gateway
    finally:
        server.stop()
        gateway.container.close()


def unique(prefix: str) -> str:
    """An upstream name no other test uses (the fake server is shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
