"""The schema: thin resolvers, each one call into the tenant-scoped data layer (application/graph_queries.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info

from api.graphql import sso
from api.graphql import types as t
from api.graphql import users as u
from api.graphql.context import GraphContext, commands, reader
from api.graphql.errors import call, should_mask, translate
from api.graphql.recheck import while_credential_stands
from api.graphql.scalars import SCALARS
from api.graphql.settings import GraphQLSettings
from domain.pricing import Price


@strawberry.type
class Query:
    @strawberry.field(description="Usage and latency per bucket: requests, tokens, cost, p50/p95/p99")
    async def usage_timeseries(self, info: Info, granularity: t.Granularity, start: dt.datetime, end: dt.datetime,
                               provider: str | None = None, model: str | None = None) -> list[t.UsageBucket]:
        rows = await call((await reader(info)).usage_timeseries, granularity.value, start, end, provider, model)
        return [t.UsageBucket.of(r) for r in rows]

    @strawberry.field(description="Totals and percentiles over [start, end) at minute resolution")
    async def usage_summary(self, info: Info, start: dt.datetime, end: dt.datetime, provider: str | None = None,
                            model: str | None = None) -> t.UsageBucket:
        return t.UsageBucket.of(await call((await reader(info)).usage_summary, start, end, provider, model))

    @strawberry.field(description="Cost lines per day, provider, model and currency, days inclusive")
    async def cost_report(self, info: Info, first_day: dt.date, last_day: dt.date,
                          model: str | None = None) -> t.CostReport:
        r = await reader(info)
        lines = await call(r.cost_report, first_day, last_day, model)
        totals = await call(r.cost_totals, first_day, last_day)
        return t.CostReport(lines=[t.CostLine.of(line) for line in lines],
                            totals=[t.CurrencyTotal(currency=c, cost_micros=n) for c, n in sorted(totals.items())])

    @strawberry.field(description="The tenant's ledger entries: one stream by version, or all by position")
    async def ledger_entries(self, info: Info, stream_id: str | None = None, from_version: int = 1,
                             from_position: int = 1, limit: int = 100) -> list[t.LedgerEntry]:
        r = await reader(info)
        if stream_id is not None:
            rows = await call(r.entries_of_stream, stream_id, from_version, limit)
        else:
            rows = await call(r.entries_from, from_position, limit)
        return [t.LedgerEntry.of(e) for e in rows]

    @strawberry.field(description="Signed checkpoints, newest first")
    async def checkpoints(self, info: Info, limit: int = 20, at_most_size: int | None = None) -> list[t.SignedCheckpoint]:
        return [t.SignedCheckpoint.of(c) for c in await call((await reader(info)).checkpoints, limit, at_most_size)]

    @strawberry.field(description="Merkle inclusion proof of one of the tenant's events (RFC 6962)")
    async def inclusion_proof(self, info: Info, event_id: uuid.UUID, tree_size: int | None = None) -> t.InclusionProof:
        p = await call((await reader(info)).inclusion_proof, event_id, tree_size)
        return t.InclusionProof(**vars(p))

    @strawberry.field(description="Merkle consistency proof between two tree sizes (RFC 6962)")
    async def consistency_proof(self, info: Info, size1: int, size2: int) -> t.ConsistencyProof:
        p = await call((await reader(info)).consistency_proof, size1, size2)
        return t.ConsistencyProof(**vars(p))

    @strawberry.field(description="Read models: version, checkpoint, lag, state")
    async def projections(self, info: Info) -> list[t.ProjectionStatus]:
        return [t.ProjectionStatus.of(s) for s in await call((await reader(info)).projection_status)]

    @strawberry.field(description="The caller's own tenant")
    async def tenant(self, info: Info) -> t.Tenant:
        row = await call((await reader(info)).own_tenant)
        return t.Tenant(**row)

    @strawberry.field(description="The tenant's API keys (never a secret)")
    async def api_keys(self, info: Info) -> list[t.ApiKey]:
        return [t.api_key(row) for row in await call((await reader(info)).api_keys)]

    @strawberry.field(description="The tenant's deployments (never a credential)")
    async def deployments(self, info: Info) -> list[t.Deployment]:
        return [t.Deployment(**row) for row in await call((await reader(info)).deployments)]

    @strawberry.field(description="When the tenant's inferences are first recorded: 'deferred' (while the upstream "
                                   "call is in flight) or 'strict' (before any upstream call)")
    async def recording_mode(self, info: Info) -> str:
        return await call((await reader(info)).recording_mode)

    @strawberry.field(description="Who the caller is and what it may do")
    async def me(self, info: Info) -> t.Me:
        actor = (await reader(info)).actor
        return t.Me(tenant_id=actor.tenant_id, subject=actor.subject, permissions=sorted(actor.permissions))

    @strawberry.field(description="The inference log, newest first: a Relay connection (first is capped at 500)")
    async def inferences(self, info: Info, first: int = 50, after: str | None = None,
                         filter: t.InferenceFilter | None = None) -> t.InferenceConnection:
        f = filter.as_filter() if filter else None
        page = await call((await reader(info)).inferences, first, after, *([f] if f else []))
        return t.InferenceConnection.of(page)

    @strawberry.field(description="One inference by its id (null if there is none in the caller's tenant)")
    async def inference(self, info: Info, id: strawberry.ID) -> t.Inference | None:
        [found] = await call((await reader(info)).inferences_by_id, [str(id)])
        return t.Inference.of(found) if found else None

    users: list[u.User] = strawberry.field(resolver=u.users, description="The tenant's users and their roles")
    roles: list[u.Role] = strawberry.field(resolver=u.roles, description="Every role and its permissions")
    sso_providers: list[sso.SsoProvider] = strawberry.field(
        resolver=sso.sso_providers, description="The tenant's single sign-on providers (never a client secret)")


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a tenant (platform owners and admins only)")
    async def create_tenant(self, info: Info, input: t.CreateTenantInput) -> t.Receipt:
        return t.Receipt.of(await call((await commands(info)).create_tenant, input.tenant_id, input.name))

    @strawberry.mutation(description="Issue an API key; the secret is in this answer and nowhere else")
    async def create_api_key(self, info: Info, input: t.CreateApiKeyInput) -> t.CreatedApiKey:
        key, receipt = await call((await commands(info)).create_api_key, input.name, input.scopes)
        shown = t.ApiKey(key_id=key.key_id, name=input.name, scopes=sorted(set(input.scopes)), revoked=False,
                         issued_at=None)
        return t.CreatedApiKey(key=shown, secret=key.token, receipt=t.Receipt.of(receipt))

    @strawberry.mutation(description="Revoke an API key: it stops working at once")
    async def revoke_api_key(self, info: Info, key_id: str, reason: str = "") -> t.Receipt:
        return t.Receipt.of(await call((await commands(info)).revoke_api_key, key_id, reason))

    @strawberry.mutation(description="Add a deployment, or replace the one of that name")
    async def configure_deployment(self, info: Info, input: t.ConfigureDeploymentInput) -> t.Receipt:
        c = await commands(info)
        try:
            price = Price(input.price.input, input.price.output, input.price.currency, input.price.version,
                          input.price.cached_input)
        except ValueError as exc:
            raise translate(exc) or exc from None
        fields = {name: getattr(input, name) for name in ("name", "provider", "model", "model_name", "base_url",
                                                           "region", "priority", "timeout_ms", "max_retries", "api_key")}
        return t.Receipt.of(await call(c.configure_deployment, price=price, **fields))

    @strawberry.mutation(description="Set when the tenant's inferences are first recorded: 'strict' commits each "
                                      "request's record before any upstream call; 'deferred' (the default) while it is "
                                      "in flight")
    async def set_recording_mode(self, info: Info, mode: str) -> t.Receipt:
        return t.Receipt.of(await call((await commands(info)).set_recording_mode, mode))

    @strawberry.mutation(description="Remove a deployment")
    async def remove_deployment(self, info: Info, name: str) -> t.Receipt:
        return t.Receipt.of(await call((await commands(info)).remove_deployment, name))

    @strawberry.mutation(description="Start a NEXUS run (plan, route, verify by consensus, synthesise); watch it "
                                     "with the nexusRun subscription")
    async def start_nexus_run(self, info: Info, input: t.StartNexusRunInput) -> t.NexusRunStarted:
        c = await commands(info)
        try:
            run_id, start = await c.start_nexus_run(input.task, input.planner_model, input.synthesis_model,
                                                    input.consensus_threshold, input.timeout)
        except Exception as exc:
            raise translate(exc) or exc from None
        return t.NexusRunStarted(run_id=run_id, from_position=start)

    invite_user: u.InvitedUser = strawberry.mutation(
        resolver=u.invite_user, description="Invite a user with one role; the invitation token is in this answer only")
    set_password: t.Receipt = strawberry.mutation(
        resolver=u.set_password, description="Set a password: with an invitation token, or your own with the current one")
    grant_role: t.Receipt = strawberry.mutation(resolver=u.grant_role, description="Grant a user a role")
    revoke_role: t.Receipt = strawberry.mutation(resolver=u.revoke_role, description="Revoke a role from a user")
    deactivate_user: t.Receipt = strawberry.mutation(
        resolver=u.deactivate_user, description="Deactivate a user: sign-in and every session stop at once")
    configure_sso_provider: t.Receipt = strawberry.mutation(
        resolver=sso.configure_sso_provider, description="Add or replace a single sign-on provider (OpenID Connect)")
    remove_sso_provider: t.Receipt = strawberry.mutation(
        resolver=sso.remove_sso_provider, description="Remove a single sign-on provider")


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The tenant's ledger events as they are recorded, from NATS; "
                                         "resume with fromPosition = last position seen + 1")
    async def events(self, info: Info, filter: t.EventFilter | None = None) -> AsyncGenerator[t.LedgerEvent, None]:
        f = filter or t.EventFilter()
        r = await reader(info)
        async for e in _live(info, r.live_events, f.category, f.type, f.from_position):
            yield t.LedgerEvent.of(e)

    @strawberry.subscription(description="A NEXUS run's events (its run stream and its inferences') until it ends, "
                                         "from NATS; fromPosition as startNexusRun returned it")
    async def nexus_run(self, info: Info, run_id: str,
                        from_position: int | None = None) -> AsyncGenerator[t.LedgerEvent, None]:
        r = await reader(info)
        async for e in _live(info, r.live_run, run_id, from_position):
            yield t.LedgerEvent.of(e)


    @strawberry.subscription(description="The tenant's inferences as their outcomes are recorded, from NATS")
    async def inference_log(self, info: Info,
                            filter: t.InferenceFilter | None = None) -> AsyncGenerator[t.Inference, None]:
        r = await reader(info)
        f = filter.as_filter() if filter else None
        async for record in _live(info, r.live_inferences, *([f] if f else [])):
            yield t.Inference.of(record)

    @strawberry.subscription(description="The tenant's live metrics bucket, at most once a second while "
                                         "inferences are recorded")
    async def metrics(self, info: Info, bucket_seconds: int = 10) -> AsyncGenerator[t.MetricsBucket, None]:
        r = await reader(info)
        async for bucket in _live(info, r.live_metrics, bucket_seconds):
            yield t.MetricsBucket.of(bucket)


async def _live(info: Info, start: Any, *args: Any) -> AsyncIterator[Any]:
    """A data-layer feed (opened off the event loop: it reads the ledger head), domain errors translated,
    ended with UNAUTHENTICATED once the caller's credential no longer stands (api/graphql/recheck.py)."""
    context: GraphContext = info.context
    try:
        feed = await asyncio.to_thread(start, *args)
        async for item in while_credential_stands(feed, context.credential_still_stands,
                                                  context.services.settings.credential_recheck_s):
            yield item
    except Exception as exc:
        raise translate(exc) or exc from None


class RejectedDocumentsAre400(SchemaExtension):
    """A document that does not parse or validate (or breaks a limit) is the client's error: HTTP 400."""

    def on_operation(self):  # type: ignore[no-untyped-def]
        yield
        ctx = self.execution_context
        response = getattr(ctx.context, "response", None)
        if ctx.pre_execution_errors and response is not None and response.status_code in (None, 200):
            response.status_code = 400


class Schema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None):  # type: ignore[no-untyped-def]
        """Client errors are the client's business; unexpected ones were logged with their trace by should_mask."""


def build_schema(settings: GraphQLSettings) -> strawberry.Schema:
    limit_rules = [*QueryDepthLimiter(max_depth=settings.max_depth).validation_rules,
                   *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules]
    # Validating a console page's document took ~2.2 ms of a ~17 ms log page (parsing 0.3 ms; measured
    # with ops/bench/graphql.py); the same few documents come again and again, so validation is cached
    # (a bounded LRU, module-level in strawberry: shared across requests). strawberry's ParserCache is
    # not used: a syntax error raised inside it skips the pre-execution errors that make a 400.
    extensions: list = [
        lambda: ValidationCache(maxsize=512),
        # The limits' validation rules are classes that each limiter makes when it is built, and the
        # validation cache is keyed on the rules: so they are made once here, and every request gets a
        # fresh extension (an instance shared between requests would share their execution contexts)
        # that adds these same rules.
        lambda: AddValidationRules(limit_rules),
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        lambda: MaskErrors(should_mask_error=should_mask, error_message="internal error"),
        RejectedDocumentsAre400,
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    return Schema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions,
                  config=StrawberryConfig(scalar_map=SCALARS))
