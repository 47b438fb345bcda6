"""A GraphQL websocket authenticates once, at connection_init; every operation started on it afterwards
must still be refused as soon as its credential is: a signed-out session, a deactivated user, a revoked
key. (GraphQL's context keeps the actor for the connection's lifetime.)"""
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.test_auth_support import end_session, session
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture
from tests.integration.test_socket_support import on_one_socket


def _before_and_after(api: Api, token: str, between: Callable[[], None]) -> list[str]:
    """One query, then `between()`, then the same query on the same connection."""
    return on_one_socket(api, token, [None, between, None])


@pytest.mark.parametrize("how", ["sign-out", "deactivation"])
def test_a_users_open_websocket_runs_nothing_once_the_session_ends(api, how):
    user, signed = session(api, "admin")
    token = signed["access_token"]

    assert _before_and_after(api, token, lambda: end_session(api, how, user, token)) == ["user:", "UNAUTHENTICATED"]


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
