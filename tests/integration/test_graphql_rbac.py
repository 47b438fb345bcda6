"""Every operation, for every role, is allowed or denied exactly as domain/rbac.MATRIX says.

Generated from the schema: an operation the schema has but api/graphql/permissions.REQUIRES or the
sample documents below do not know fails the test, so a new mutation cannot ship without a matrix entry.
"""
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from api.graphql.context import GraphContext
from api.graphql.permissions import REQUIRES
from api.graphql.schema import build_schema
from api.graphql.settings import GraphQLSettings
from application.graph_queries import EventFeed
from domain.ledger import RecordedEvent
from domain.pricing import Price
from domain.rbac import MATRIX, ROLES, actor_for_role
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture

TENANT = "platform"  # the platform tenant, so that tenants.create is not filtered out for anyone
NOW = dt.datetime.now(dt.UTC)
SPAN = {"s": (NOW - dt.timedelta(hours=1)).isoformat(), "e": NOW.isoformat(), "d": NOW.date().isoformat()}


def _key(api: Api) -> dict[str, Any]:
    return {"k": api.container.identity.issue_key(TENANT, ["read"])[0].key_id}


def _deployment(api: Api) -> dict[str, Any]:
    api.container.deployments.configure(TENANT, name="d1", provider="openai", model="m", model_name="m",
                                        price=Price(1, 1, "USD", "v1"))
    return {}


def _nexus_model(api: Api) -> dict[str, Any]:
    """A model for a NEXUS run to plan with; its upstream refuses connections, so the run ends at once."""
    api.container.deployments.configure(TENANT, name="nx", provider="openai", model="m", model_name="nx",
                                        base_url="http://127.0.0.1:9/v1", price=Price(1, 1, "USD", "v1"))
    return {}


def _event(api: Api) -> dict[str, Any]:
    [receipt] = api.container.identity.issue_key(TENANT, ["read"])[1:]
    api.project()
    return {"id": str(receipt.event_id)}


def _invited(api: Api, role: str = "analyst") -> tuple[str, str]:
    """(user id, invitation token) of a fresh user of the test tenant, invited by a platform owner."""
    owner = actor_for_role(TENANT, "owner", subject="setup", platform_tenant=TENANT)
    invitation, _ = api.container.users.invite(owner, f"u{uuid.uuid4().hex[:8]}@example.com", role, "setup")
    return invitation.user_id, invitation.token


def _user_with_viewer(api: Api) -> dict[str, Any]:
    user_id, _ = _invited(api)
    owner = actor_for_role(TENANT, "owner", subject="setup", platform_tenant=TENANT)
    api.container.users.grant_role(owner, user_id, "viewer", "setup")
    return {"u": user_id}


def _sso_provider(api: Api) -> dict[str, Any]:
    owner = actor_for_role(TENANT, "owner", subject="setup", platform_tenant=TENANT)
    api.container.sso.configure(owner, provider_id="okta1", name="Okta", kind="okta", client_id="c",
                                issuer="https://example.okta.com", client_secret="s", allowed_domains=["example.com"],
                                address="setup")
    return {}


# field -> (document, setup returning variables). Fields of every root type must appear here.
SAMPLES: dict[str, tuple[str, Callable[[Api], dict[str, Any]]]] = {
    "usageTimeseries": ("query($s: DateTime!, $e: DateTime!) { usageTimeseries(granularity: HOUR, start: $s, end: $e) { requests } }", lambda a: SPAN),
    "usageSummary": ("query($s: DateTime!, $e: DateTime!) { usageSummary(start: $s, end: $e) { requests } }", lambda a: SPAN),
    "costReport": ("query($d: Date!) { costReport(firstDay: $d, lastDay: $d) { totals { currency } } }", lambda a: SPAN),
    "ledgerEntries": ("{ ledgerEntries { position } }", lambda a: {}),
    "checkpoints": ("{ checkpoints { treeSize } }", lambda a: {}),
    "inclusionProof": ("query($id: UUID!) { inclusionProof(eventId: $id) { position } }", _event),
    "consistencyProof": ("{ consistencyProof(size1: 1, size2: 1) { path } }", lambda a: {}),
    "projections": ("{ projections { name } }", lambda a: {}),
    "tenant": ("{ tenant { tenantId } }", lambda a: {}),
    "apiKeys": ("{ apiKeys { keyId } }", lambda a: {}),
    "deployments": ("{ deployments { name } }", lambda a: {}),
    "me": ("{ me { tenantId } }", lambda a: {}),
    "createTenant": ("mutation($t: String!) { createTenant(input: {tenantId: $t}) { position } }",
                     lambda a: {"t": f"t-{uuid.uuid4().hex[:8]}"}),
    "createApiKey": ('mutation { createApiKey(input: {name: "k", scopes: ["inference"]}) { secret } }', lambda a: {}),
    "revokeApiKey": ("mutation($k: String!) { revokeApiKey(keyId: $k) { position } }", _key),
    "configureDeployment": ('mutation { configureDeployment(input: {name: "d2", provider: "openai", model: "m", '
                            'price: {input: 1, output: 1, currency: "USD", version: "v1"}}) { position } }', lambda a: {}),
    "removeDeployment": ('mutation { removeDeployment(name: "d1") { position } }', _deployment),
    "recordingMode": ("{ recordingMode }", lambda a: {}),
    "setRecordingMode": ('mutation { setRecordingMode(mode: "strict") { position } }', lambda a: {}),
    "users": ("{ users { userId roles } }", lambda a: {}),
    "roles": ("{ roles { name permissions } }", lambda a: {}),
    "inviteUser": ("mutation($e: String!) { inviteUser(input: {email: $e, role: \"viewer\"}) { inviteToken } }",
                   lambda a: {"e": f"n{uuid.uuid4().hex[:8]}@example.com"}),
    "setPassword": ("mutation($t: String!) { setPassword(inviteToken: $t, password: \"correct horse battery\") "
                    "{ position } }", lambda a: {"t": _invited(a)[1]}),
    "grantRole": ('mutation($u: String!) { grantRole(userId: $u, role: "viewer") { position } }',
                  lambda a: {"u": _invited(a)[0]}),
    "revokeRole": ('mutation($u: String!) { revokeRole(userId: $u, role: "viewer") { position } }', _user_with_viewer),
    "deactivateUser": ("mutation($u: String!) { deactivateUser(userId: $u) { position } }",
                       lambda a: {"u": _invited(a)[0]}),
    "ssoProviders": ("{ ssoProviders { providerId hasClientSecret } }", lambda a: {}),
    "configureSsoProvider": ('mutation { configureSsoProvider(input: {providerId: "g1", name: "Google", kind: "google", '
                             'clientId: "c", clientSecret: "s", allowedDomains: ["example.com"], defaultRole: "viewer"}) '
                             '{ position } }', lambda a: {}),
    "removeSsoProvider": ('mutation { removeSsoProvider(providerId: "okta1") { position } }', _sso_provider),
    "events": ("subscription { events(filter: {fromPosition: 1}) { position } }", lambda a: {}),
    "inferences": ("{ inferences(first: 5) { edges { cursor node { id costMicros } } } }", lambda a: {}),
    "inference": ('{ inference(id: "none") { id } }', lambda a: {}),
    "inferenceLog": ("subscription { inferenceLog { id } }", lambda a: {}),
    "metrics": ("subscription { metrics(bucketSeconds: 5) { inferences } }", lambda a: {}),
    "startNexusRun": ('mutation { startNexusRun(input: {task: "t", plannerModel: "nx"}) { runId } }', _nexus_model),
    "nexusRun": ('subscription { nexusRun(runId: "r", fromPosition: 1) { position } }', lambda a: {}),
}

SCHEMA = build_schema(GraphQLSettings())


def root_fields() -> set[str]:
    found = set()
    for root in (SCHEMA.query, SCHEMA.mutation, SCHEMA.subscription):
        found |= {field.name for field in SCHEMA.get_type_by_name(root.__strawberry_definition__.name).fields}
    return found


def test_every_operation_has_a_permission_entry_and_a_sample():
    fields = {SCHEMA.config.name_converter.apply_naming_config(f) for f in root_fields()}
    assert fields - set(REQUIRES) == set(), "operations without a permission entry in api/graphql/permissions.py"
    assert fields - set(SAMPLES) == set(), "operations without a sample document in this test"
    assert {p for p in REQUIRES.values() if p} <= set().union(*MATRIX.values())


class ReachedFeed(EventFeed):
    """The live event feed of this test: it records that a subscription reached it, and delivers nothing.
    A subscription's permission is checked before its feed is touched, so each outcome is a signal of its
    own: FORBIDDEN arrives, or the feed is reached. No timeout decides (a 0.5 s one did: a denial slower
    than that, on a loaded machine, passed for "allowed", and a NATS hiccup within it for "denied").
    The real feed's own behaviour is tests/integration/test_graphql_subscriptions.py's business."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()

    async def tail(self, tenant_id: str, category: str | None, event_type: str | None,
                   from_position: int | None) -> AsyncIterator[RecordedEvent]:
        self.reached.set()
        await asyncio.Event().wait()  # open until the subscription is closed
        yield  # an async generator, like the real feed


async def subscribe_as(context: GraphContext, document: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors a subscription starts with; [] once it has reached its feed (allowed, waiting for events)."""
    feed = ReachedFeed()
    context.services = replace(context.services, sources=replace(context.services.sources, feed=feed))
    stream = await SCHEMA.subscribe(document, context_value=context, variable_values=variables)
    if not hasattr(stream, "__anext__"):
        return [e.formatted for e in stream.errors or []]
    first = asyncio.ensure_future(anext(stream))
    reached = asyncio.ensure_future(feed.reached.wait())
    try:
        await asyncio.wait({first, reached}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert first.done() or reached.done(), f"{document}: neither an answer nor its feed reached in 60 s"
        return [e.formatted for e in first.result().errors or []] if first.done() else []
    finally:
        first.cancel()
        reached.cancel()
        await asyncio.gather(first, reached, return_exceptions=True)
        await stream.aclose()


async def run_as(api: Api, role: str, document: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    context = GraphContext(api.services)
    context.actor_override = actor_for_role(TENANT, role, platform_tenant=TENANT)
    if document.startswith("subscription"):
        return await subscribe_as(context, document, variables)
    result = await SCHEMA.execute(document, context_value=context, variable_values=variables)
    runs = api.services.sources.orchestrator.background  # a NEXUS run started here records before the next check
    await asyncio.gather(*list(runs), return_exceptions=True)
    return [e.formatted for e in result.errors or []]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_do_exactly_what_the_matrix_grants(api, role):
    api.container.identity.create_tenant(TENANT)
    api.project()

    async def check_all() -> list[str]:
        wrong = []
        for field, permission in REQUIRES.items():
            document, setup = SAMPLES[field]
            variables = await asyncio.to_thread(setup, api)
            before = api.size()  # after the sample's own setup, which may record (a key to revoke...)
            errors = await run_as(api, role, document, variables)
            denied = any(e.get("extensions", {}).get("code") == "FORBIDDEN" for e in errors)
            allowed = permission is None or permission in MATRIX[role]
            if allowed and errors:
                wrong.append(f"{role} {field}: expected allowed, got {errors}")
            if not allowed and not denied:
                wrong.append(f"{role} {field}: expected FORBIDDEN, got {errors or 'success'}")
            if not allowed and api.size() != before:
                wrong.append(f"{role} {field}: denied but the ledger grew")
        return wrong

    assert asyncio.run(check_all()) == []
