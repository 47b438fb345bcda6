"""The GraphQL API under test: a real container on a test database and the test's NATS stream, served by
uvicorn; tenants `acme` and `globex`, each with an admin key. No tests here: fixtures and helpers only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.bootstrap import Container, bootstrap
from api.graphql.context import GraphServices
from api.settings import Settings
from domain.ledger import NewEvent, Receipt
from projections.registry import DEPLOYED
from tests.fakes.server import ServerThread


@dataclass
class Api:
    url: str
    container: Container
    services: GraphServices
    keys: dict[str, str]  # tenant -> admin token
    nats_url: str = ""

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def gql(self, document: str, variables: dict[str, Any] | None = None, *, tenant: str = "acme",
            token: str | None = None) -> httpx.Response:
        with self.http(token if token is not None else self.keys[tenant]) as client:
            return client.post("/graphql", json={"query": document, "variables": variables or {}})

    def data(self, document: str, variables: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        response = self.gql(document, variables, **kw)
        body = response.json()
        assert response.status_code == 200 and "errors" not in body, body
        return body["data"]

    def append(self, *events: NewEvent) -> list[Receipt]:
        return self.container.ledger.append(list(events))

    def project(self) -> None:
        """Bring every read model up to the ledger head (the NATS consumers do this in production)."""
        for projection in DEPLOYED:
            self.services.sources.projections.catch_up_from_ledger(projection, self.container.ledger)

    def ensure_stream(self) -> None:
        """Create the JetStream stream the relay would create, without relaying anything."""
        from adapters.nats.connect import connect
        from adapters.nats.relay import StreamNames, ensure_stream

        async def create() -> None:
            nc = await connect(self.nats_url, "test")
            names = StreamNames(self.container.settings.nats_stream, self.container.settings.nats_subject_prefix)
            await ensure_stream(nc.jetstream(), names, self.container.ledger.genesis().ledger_id)
            await nc.close()

        asyncio.run(create())

    def size(self) -> int:
        return self.container.ledger.head().size


def start_api(database: Any, data_dir: Path, nats_url: str | None = None, names: Any = None) -> tuple[Api, ServerThread]:
    extra = {"nats_url": nats_url, "nats_stream": names.stream, "nats_subject_prefix": names.subject_prefix} if names else {}
    container = bootstrap(Settings(database_url=database.admin_url, data_dir=data_dir, **extra))
    keys = {}
    for tenant in ("acme", "globex"):
        container.identity.create_tenant(tenant)
        keys[tenant] = container.identity.issue_key(tenant, ["admin"], "tests")[0].token
    app = create_app(container)
    server = ServerThread(app, lifespan="on").start()
    api = Api(server.url, container, app.state.graphql, keys, nats_url or "")
    api.project()
    return api, server


@pytest.fixture
def api(database: Any, tmp_path: Path, nats_url: str, stream_names: Any) -> Iterator[Api]:
    running, server = start_api(database, tmp_path / "data", nats_url, stream_names)
    try:
        yield running
    finally:
        server.stop()
        running.container.close()
