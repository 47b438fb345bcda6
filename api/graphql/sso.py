"""Resolvers for single sign-on providers: each one call into application/sso.py with the caller's Actor.

The client secret goes in (`clientSecret`, sealed before it reaches the ledger) and never comes out:
`SsoProvider` has no field that could carry it, only whether one is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from strawberry.types import Info

from api.graphql.context import GraphContext
from api.graphql.errors import ClientError, call
from api.graphql.types import Receipt
from domain import sso
from domain.sso import SsoProvider as ProviderState

T = TypeVar("T")


@strawberry.type(description="A single sign-on provider of the caller's tenant (never its client secret)")
class SsoProvider:
    provider_id: str
    name: str
    kind: str = strawberry.field(description="google, azure, okta or oidc")
    issuer: str
    client_id: str
    has_client_secret: bool
    allowed_domains: list[str]
    default_role: str | None = strawberry.field(description="Role of users created at their first sign-in; "
                                                            "null: only existing users may sign in")


@strawberry.input
class ConfigureSsoProviderInput:
    provider_id: str = strawberry.field(description="Slug used in /v1/auth/sso/{providerId}/login")
    name: str
    kind: str = strawberry.field(description="google (issuer preset), azure (give directory), okta or oidc (give issuer)")
    client_id: str
    allowed_domains: list[str]
    issuer: str | None = None
    directory: str | None = strawberry.field(default=None, description="Entra ID directory (tenant) id, for azure")
    client_secret: str | None = strawberry.field(default=None, description="Required for a new provider; "
                                                                           "omit to keep the stored one")
    default_role: str | None = None


def provider_of(p: ProviderState) -> SsoProvider:
    return SsoProvider(provider_id=p.provider_id, name=p.name, kind=p.kind, issuer=p.issuer, client_id=p.client_id,
                       has_client_secret=p.client_secret is not None, allowed_domains=list(p.allowed_domains),
                       default_role=p.default_role)


def _context(info: Info) -> GraphContext:
    context: GraphContext = info.context
    if context.services.sso is None:
        raise ClientError("single sign-on is not configured in this process", "NOT_FOUND")
    return context


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return await call(fn, *args, **kwargs)
    except sso.InvalidSsoProvider as exc:
        raise ClientError(str(exc), "BAD_USER_INPUT", exc.field) from None
    except sso.UnknownSsoProvider as exc:
        raise ClientError(str(exc), "NOT_FOUND", "providerId") from None


async def sso_providers(info: Info) -> list[SsoProvider]:
    c = _context(info)
    return [provider_of(p) for p in await _call(c.services.sso.providers, await c.actor())]


async def configure_sso_provider(info: Info, input: ConfigureSsoProviderInput) -> Receipt:
    c = _context(info)
    return Receipt.of(await _call(
        c.services.sso.configure, await c.actor(), provider_id=input.provider_id, name=input.name, kind=input.kind,
        client_id=input.client_id, allowed_domains=input.allowed_domains, address=c.client_address(),
        issuer=input.issuer, directory=input.directory, client_secret=input.client_secret,
        default_role=input.default_role))


async def remove_sso_provider(info: Info, provider_id: str) -> Receipt:
    c = _context(info)
    return Receipt.of(await _call(c.services.sso.remove, await c.actor(), provider_id, c.client_address()))
