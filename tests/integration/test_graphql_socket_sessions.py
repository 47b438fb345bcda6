"""A GraphQL websocket authenticates once, at connection_init; every operation started on it afterwards
must still be refused as soon as its credential is: a signed-out session, a deactivated user, a revoked
key. (GraphQL's context keeps the actor for the connection's lifetime.)"""
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from tests.integration.test_auth_support import session
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture

ME = "{ me { subject } }"


def _before_and_after(api: Api, token: str, between: Callable[[], None]) -> list[Any]:
    """One query, then `between()`, then the same query on the same connection: its result or error code."""

    async def run() -> list[Any]:
        transport = WebsocketsTransport(url=api.url.replace("http", "ws") + "/graphql",
                                        subprotocols=["graphql-transport-ws"],
                                        init_payload={"Authorization": f"Bearer {token}"})
        outcomes: list[Any] = []
        async with Client(transport=transport) as socket:
            for step in range(2):
                if step == 1:
                    await asyncio.to_thread(between)
                try:
                    outcomes.append((await socket.execute(gql(ME)))["me"]["subject"].split(":")[0] + ":")
                except TransportQueryError as exc:
                    outcomes.append(((exc.errors or [{}])[0].get("extensions") or {}).get("code"))
        return outcomes

    return asyncio.run(run())


@pytest.mark.parametrize("how", ["sign-out", "deactivation"])
def test_a_users_open_websocket_runs_nothing_once_the_session_ends(api, how):
    user, signed = session(api, "admin")
    token = signed["access_token"]

    def end() -> None:
        if how == "sign-out":
            with api.http(token) as http:
                assert http.post("/v1/auth/sign-out", json={}).status_code == 204
        else:
            api.data("mutation($u: String!) { deactivateUser(userId: $u) { position } }", {"u": user["user_id"]})

    assert _before_and_after(api, token, end) == ["user:", "UNAUTHENTICATED"]


def test_a_revoked_keys_open_websocket_runs_nothing_more(api):
    created = api.data('mutation { createApiKey(input: {name: "ws", scopes: ["read"]}) { key { keyId } secret } }')
    key = created["createApiKey"]

    def revoke() -> None:
        api.data('mutation($k: String!) { revokeApiKey(keyId: $k, reason: "test") { position } }', {"k": key["key"]["keyId"]})

    assert _before_and_after(api, key["secret"], revoke) == ["key:", "UNAUTHENTICATED"]


def test_an_access_token_that_merely_expired_keeps_its_open_socket(api):
    """The console keeps one socket across pages while a live view is open, and renews its access token
    every 10 minutes over HTTP: a socket authenticated with a token that has since expired (the session
    itself alive) must go on starting subscriptions, as it did before the re-check existed."""
    import datetime as dt
    import time

    api.container.sessions.access_ttl = dt.timedelta(seconds=2)
    _, signed = session(api, "admin")
    assert _before_and_after(api, signed["access_token"], lambda: time.sleep(3)) == ["user:", "user:"]
