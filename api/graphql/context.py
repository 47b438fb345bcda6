"""Who is calling: resolved once per request (or per websocket connection) from its credentials.

HTTP: `Authorization: Bearer nx_...` (an API key) or `Bearer <access JWT>` (a signed-in user; also read
from the console's HTTP-only access cookie, docs/auth.md). Websockets: the same header on the upgrade request,
or `{"Authorization": "Bearer ..."}` in the connection_init payload (browsers cannot set headers there).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from strawberry.fastapi import BaseContext
from strawberry.types import Info

from api.graphql.errors import unauthenticated
from api.graphql.settings import GraphQLSettings
from application.credentials import still_stands
from application.graph_queries import Sources, TenantCommands, TenantReader
from domain.rbac import Actor, permissions_for


@dataclass
class GraphServices:
    """Everything the resolvers reach, built at start-up by api.graphql.mount."""

    sources: Sources
    settings: GraphQLSettings
    live: Any  # api.graphql.live.LiveEvents
    users: Any = None  # application.users.UserService
    sessions: Any = None  # application.sessions.SessionService
    sso: Any = None  # application.sso.SsoService


class GraphContext(BaseContext):
    def __init__(self, services: GraphServices) -> None:
        super().__init__()
        self.services = services
        self._actor: Actor | None = None
        self.actor_override: Actor | None = None  # set by in-process callers (tests, the CLI)

    def _credentials(self) -> str:
        header = ""
        if self.request is not None:
            header = self.request.headers.get("authorization", "")
        if not header and isinstance(self.connection_params, dict):
            header = str(self.connection_params.get("Authorization") or self.connection_params.get("authorization") or "")
        scheme, _, token = header.partition(" ")
        if not header and self.request is not None:
            from api.auth.settings import AuthSettings

            settings = getattr(self.request.app.state, "auth_settings", None) or AuthSettings()  # read at start-up
            return self.request.cookies.get(settings.access_cookie, "")
        return token.strip() if scheme.lower() == "bearer" else ""

    def client_address(self) -> str:
        """Where the request came from, recorded with every admin change."""
        if self.request is not None and self.request.client is not None:
            return self.request.client.host
        return "in-process"

    async def actor(self) -> Actor:
        if self.actor_override is not None:
            return self.actor_override
        if self._actor is None:
            self._actor = await self._authenticate(self._credentials())
        return self._actor

    async def credential_still_stands(self) -> bool:
        """Whether the credential this connection was authenticated with still stands now (a running
        subscription asks once an interval: api/graphql/recheck.py)."""
        if self.actor_override is not None:
            return True
        return await asyncio.to_thread(still_stands, self._credentials(), identity=self.services.sources.identity,
                                       sessions=self.services.sessions)

    async def _authenticate(self, token: str) -> Actor:
        if token.startswith("nx_"):
            principal = await asyncio.to_thread(self.services.sources.identity.authenticate, token)
            if principal is not None:
                permissions = permissions_for(principal.tenant_id, scopes=principal.scopes,
                                              platform_tenant=self.services.settings.platform_tenant)
                return Actor(principal.tenant_id, f"key:{principal.key_id}", permissions)
        elif token.count(".") == 2 and self.services.sessions is not None:  # a JWT: re-checked against the ledger
            actor = await asyncio.to_thread(self.services.sessions.authenticate, token)
            if actor is not None:
                return actor
        if self.response is not None:
            self.response.status_code = 401
        raise unauthenticated()


async def reader(info: Info) -> TenantReader:
    context: GraphContext = info.context
    return TenantReader(await context.actor(), context.services.sources)


async def commands(info: Info) -> TenantCommands:
    context: GraphContext = info.context
    return TenantCommands(await context.actor(), context.services.sources, context.services.settings.platform_tenant)
