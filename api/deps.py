"""Request dependencies: who is calling, and may they do this."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from api.errors import forbidden, unauthorized
from domain.identity import Principal


def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("missing API key: send 'Authorization: Bearer nx_...'")
    principal = request.app.state.container.identity.authenticate(token.strip())
    if principal is None:
        raise unauthorized()
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(scope: str) -> Callable[[Principal], Principal]:
    def check(principal: CurrentPrincipal) -> Principal:
        if not principal.has(scope):
            raise forbidden(scope)
        return principal

    return check
