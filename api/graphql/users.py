"""Resolvers for users and roles: each one call into application/users.py with the caller's Actor.

Tenant scoping and permissions are enforced there (UserService checks `users.read` / `users.write` /
`owners.write` and only sees users of `actor.tenant_id`); these functions only map arguments.
"""

from __future__ import annotations

import datetime as dt

import strawberry
from strawberry.types import Info

from api.graphql.context import GraphContext
from api.graphql.errors import ClientError, call
from api.graphql.types import Receipt
from application.graph_queries import NotFound
from domain.rbac import MATRIX, ROLES
from domain.users import User as UserState


@strawberry.type(description="A user of the caller's tenant (never a password hash)")
class User:
    user_id: str
    email: str
    roles: list[str]
    active: bool
    has_password: bool
    invited_by: str


@strawberry.type(description="A role and the permissions the matrix (domain/rbac.py) gives it")
class Role:
    name: str
    permissions: list[str]


@strawberry.type
class InvitedUser:
    user: User
    invite_token: str = strawberry.field(description="Single-use, expires in 7 days; shown here only")
    invite_expires_at: dt.datetime
    receipt: Receipt


@strawberry.input
class InviteUserInput:
    email: str
    role: str


def user_of(u: UserState) -> User:
    return User(user_id=u.user_id, email=u.email, roles=sorted(u.roles), active=u.active,
                has_password=u.has_password, invited_by=u.invited_by)


def _context(info: Info) -> GraphContext:
    context: GraphContext = info.context
    if context.services.users is None:
        raise ClientError(str(NotFound("users are not configured in this process")), "NOT_FOUND")
    return context


async def users(info: Info) -> list[User]:
    c = _context(info)
    found = await call(c.services.users.list, await c.actor(), c.services.sources.projections)
    return [user_of(u) for u in found]


async def roles(info: Info) -> list[Role]:
    await info.context.actor()  # any authenticated caller may read the (public) matrix
    return [Role(name=r, permissions=sorted(MATRIX[r])) for r in ROLES]


async def invite_user(info: Info, input: InviteUserInput) -> InvitedUser:
    c = _context(info)
    invitation, receipt = await call(c.services.users.invite, await c.actor(), input.email, input.role,
                                     c.client_address())
    state = await call(c.services.users.state, invitation.user_id)
    return InvitedUser(user=user_of(state), invite_token=invitation.token,
                       invite_expires_at=dt.datetime.fromisoformat(state.invite_expires_at), receipt=Receipt.of(receipt))


async def set_password(info: Info, password: str, invite_token: str | None = None,
                       current_password: str | None = None) -> Receipt:
    """With an invitation token, no other credentials are needed: the token is one. Without, the caller
    must be a signed-in user changing its own password."""
    c = _context(info)
    if invite_token is not None:
        return Receipt.of(await call(c.services.users.accept_invitation, invite_token, password, c.client_address()))
    actor = await c.actor()
    if not actor.subject.startswith("user:"):
        raise ClientError("setPassword without inviteToken changes the signed-in user's own password; "
                          f"this caller is {actor.subject!r}", "FORBIDDEN")
    return Receipt.of(await call(c.services.users.change_password, actor, current_password or "", password,
                                 c.client_address()))


async def grant_role(info: Info, user_id: str, role: str) -> Receipt:
    c = _context(info)
    return Receipt.of(await call(c.services.users.grant_role, await c.actor(), user_id, role, c.client_address()))


async def revoke_role(info: Info, user_id: str, role: str) -> Receipt:
    c = _context(info)
    return Receipt.of(await call(c.services.users.revoke_role, await c.actor(), user_id, role, c.client_address()))


async def deactivate_user(info: Info, user_id: str, reason: str = "") -> Receipt:
    c = _context(info)
    return Receipt.of(await call(c.services.users.deactivate, await c.actor(), user_id, reason, c.client_address()))
