"""Domain errors as typed GraphQL errors: `extensions = {code, field}` and a message saying what was expected.

Anything not listed here is a bug: `MaskErrors` replaces it with "internal error" and the trace goes
to the log only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from graphql import GraphQLError

from application.graph_queries import InvalidArgument, NotFound, Unavailable
from domain import identity, users
from domain.deployments import DeploymentError, InvalidDeployment, UnknownDeployment
from domain.ledger import InvalidEvent
from domain.pricing import InvalidPrice
from domain.rbac import PermissionDenied, UnknownRole

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClientError(GraphQLError):
    """An error the caller can act on; never masked."""

    def __init__(self, message: str, code: str, field: str | None = None) -> None:
        extensions: dict[str, Any] = {"code": code}
        if field is not None:
            extensions["field"] = field
        super().__init__(message, extensions=extensions)


def unauthenticated(message: str = "missing, malformed or revoked credentials: send 'Authorization: Bearer nx_...'") -> ClientError:
    return ClientError(message, "UNAUTHENTICATED")


def translate(exc: Exception) -> ClientError | None:
    """The client-facing form of a domain error, or None for an unexpected one."""
    if isinstance(exc, PermissionDenied):
        return ClientError(str(exc), "FORBIDDEN")
    if isinstance(exc, (NotFound, identity.UnknownTenant, identity.UnknownApiKey, UnknownDeployment)):
        return ClientError(str(exc), "NOT_FOUND")
    if isinstance(exc, Unavailable):
        return ClientError(str(exc), "UNAVAILABLE")
    if isinstance(exc, InvalidArgument):
        return ClientError(str(exc), "BAD_USER_INPUT", exc.field)
    if isinstance(exc, identity.InvalidTenantId):
        return ClientError(str(exc), "BAD_USER_INPUT", "tenantId")
    if isinstance(exc, identity.InvalidScopes):
        return ClientError(str(exc), "BAD_USER_INPUT", "scopes")
    if isinstance(exc, UnknownRole):
        return ClientError(str(exc), "BAD_USER_INPUT", "role")
    if isinstance(exc, InvalidDeployment):
        return ClientError(str(exc), "BAD_USER_INPUT", exc.field)
    if isinstance(exc, InvalidPrice):
        return ClientError(str(exc), "BAD_USER_INPUT", f"price.{getattr(exc, 'field', '')}".rstrip("."))
    if isinstance(exc, InvalidEvent):
        return ClientError(str(exc), "BAD_USER_INPUT", getattr(exc, "field", None))
    user_error = _user_error(exc)
    if user_error is not None:
        return user_error
    if isinstance(exc, (identity.TenantAlreadyExists, identity.ApiKeyAlreadyRevoked)):
        return ClientError(str(exc), "CONFLICT")
    if isinstance(exc, (identity.IdentityError, DeploymentError)):
        return ClientError(str(exc), "BAD_USER_INPUT")
    return None


def _user_error(exc: Exception) -> ClientError | None:
    if not isinstance(exc, users.UserError):
        return None
    if isinstance(exc, users.UnknownUser):
        return ClientError(str(exc), "NOT_FOUND", "userId")
    if isinstance(exc, (users.UserAlreadyInvited, users.RoleAlreadyHeld, users.RoleNotHeld, users.UserInactive)):
        return ClientError(str(exc), "CONFLICT")
    fields = {users.InvalidEmail: "email", users.WeakPassword: "password", users.InvalidInvitation: "inviteToken",
              users.InvalidPassword: "currentPassword"}
    return ClientError(str(exc), "BAD_USER_INPUT", fields.get(type(exc)))


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking data-layer call off the event loop; domain errors come back as ClientError."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ClientError:
        raise
    except Exception as exc:
        client = translate(exc)
        if client is None:
            raise
        raise client from None


def should_mask(error: GraphQLError) -> bool:
    """Mask every error that is not a client error (syntax and validation errors have no original)."""
    original = error.original_error
    if original is None or isinstance(original, ClientError):
        return False
    log.error("unexpected error in %s", error.path, exc_info=original)
    return True
