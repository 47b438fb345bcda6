"""A subscription already streaming ends with UNAUTHENTICATED once its credential does: a session signed out,
a user deactivated, a key revoked (each subscription re-checks once an interval, api/graphql/recheck.py).
A session whose access token merely expired goes on: the console renews the token over HTTP and keeps its
socket. Real PostgreSQL, NATS, relay and websocket client."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable

import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError

from tests.integration.test_auth_support import end_session, session
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture
from tests.integration.test_graphql_subscriptions import EVENTS, relayed, transport  # noqa: F401 - fixture
from tests.integration.test_projections_support import completed

RECHECK_S = 0.3  # the subscriptions' interval in these tests (5 s by default)
WATCH_S = 3.0  # how long a subscription is watched after `between`: ten intervals


def watch(api: Api, token: str, between: Callable[[], None]) -> tuple[str, int]:
    """An `events` subscription sees one event; then `between()` runs (in a thread) while the subscription
    streams, and events go on being recorded every 0.1 s for WATCH_S. (how it ended: the error code, or
    'streaming' if it had not; how many events it delivered after `between` returned)."""
    api.services.settings.credential_recheck_s = RECHECK_S
    start = api.size() + 1  # a position, not "from now": the first event cannot slip past before the subscribe

    async def scenario() -> tuple[str, int]:
        seen: list[int] = []
        ended: list[str] = []

        async def subscribe() -> None:
            async with Client(transport=transport(api, token, "graphql-transport-ws")) as socket:
                try:
                    async for result in socket.subscribe(GraphQLRequest(EVENTS, variable_values={"from": start})):
                        seen.append(result["events"]["position"])
                except TransportQueryError as exc:
                    ended.append(str(((exc.errors or [{}])[0].get("extensions") or {}).get("code")))

        subscription = asyncio.create_task(subscribe())
        await asyncio.to_thread(api.append, completed(tenant="acme"))
        while not seen:
            assert not subscription.done(), ended
            await asyncio.sleep(0.05)
        await asyncio.to_thread(between)
        delivered_before = len(seen)
        deadline = time.monotonic() + WATCH_S
        while not subscription.done() and time.monotonic() < deadline:
            await asyncio.to_thread(api.append, completed(tenant="acme"))
            await asyncio.sleep(0.1)
        subscription.cancel()
        await asyncio.gather(subscription, return_exceptions=True)
        return (ended[0] if ended else "streaming"), len(seen) - delivered_before

    return asyncio.run(scenario())


@pytest.mark.parametrize("how", ["sign-out", "deactivation"])
def test_a_users_running_subscription_ends_when_the_session_does(relayed, how):
    api = relayed
    user, signed = session(api, "admin")
    token = signed["access_token"]

    how_it_ended, _ = watch(api, token, lambda: end_session(api, how, user, token))
    assert how_it_ended == "UNAUTHENTICATED"


def test_a_keys_running_subscription_ends_when_the_key_is_revoked(relayed):
    api = relayed
    key = api.data('mutation { createApiKey(input: {name: "live", scopes: ["read"]}) { key { keyId } secret } }')
    key = key["createApiKey"]

    def revoke() -> None:
        api.data('mutation($k: String!) { revokeApiKey(keyId: $k, reason: "test") { position } }',
                 {"k": key["key"]["keyId"]})

    how_it_ended, _ = watch(api, key["secret"], revoke)
    assert how_it_ended == "UNAUTHENTICATED"


def test_a_running_subscription_outlives_its_access_token_while_the_session_stands(relayed):
    api = relayed
    # Long enough for the subscription to start with a valid token on a busy machine (1 s was not, in CI),
    # and waited out in full once it runs.
    ttl_s = 4.0
    api.container.sessions.access_ttl = dt.timedelta(seconds=ttl_s)
    signed_at = time.monotonic()
    _, signed = session(api, "admin")

    def until_the_token_expired() -> None:
        time.sleep(max(0.0, signed_at + ttl_s + 0.5 - time.monotonic()))

    how_it_ended, delivered = watch(api, signed["access_token"], until_the_token_expired)
    assert how_it_ended == "streaming" and delivered > 0


def test_the_other_subscriptions_of_a_revoked_key_end_too(relayed):
    """inferenceLog, metrics and nexusRun go through the same re-check as events."""
    api = relayed
    key = api.data('mutation { createApiKey(input: {name: "live", scopes: ["read"]}) { key { keyId } secret } }')
    key = key["createApiKey"]
    api.services.settings.credential_recheck_s = RECHECK_S
    documents = ["subscription { inferenceLog { id } }", "subscription { metrics(bucketSeconds: 10) { inferences } }",
                 'subscription { nexusRun(runId: "nobody") { position } }']

    async def scenario() -> list[str]:
        async def one(document: str) -> str:
            async with Client(transport=transport(api, key["secret"], "graphql-transport-ws")) as socket:
                try:
                    async for _ in socket.subscribe(gql(document)):
                        pass
                except TransportQueryError as exc:
                    return str(((exc.errors or [{}])[0].get("extensions") or {}).get("code"))
            return "completed"

        running = [asyncio.create_task(one(d)) for d in documents]
        await asyncio.sleep(1)  # all three subscribed (nothing arrives: none of them has anything to show)
        assert not any(task.done() for task in running), [t.result() for t in running if t.done()]
        await asyncio.to_thread(api.data, 'mutation($k: String!) { revokeApiKey(keyId: $k) { position } }',
                                {"k": key["key"]["keyId"]})
        return list(await asyncio.wait_for(asyncio.gather(*running), WATCH_S))

    assert asyncio.run(scenario()) == ["UNAUTHENTICATED"] * 3

