"""Users of a tenant: pure decisions over the facts in their ledger streams.

A user belongs to one tenant and is named there by email. Its id is derived from (tenant, email), so
"is this email already invited here?" is answered by appending at stream version 0, and sign-in finds
the stream without any index. Because the tenant is part of the id, the same person in two tenants is
two users: nothing a user can do in tenant A reaches tenant B.

Password hashes are NOT facts of the ledger: the ledger is exported in audit bundles, and an argon2
hash in an auditor's hands is an offline guessing target. The hash lives in the mutable `auth` schema
(adapters/postgres/credentials.py); the ledger records `UserPasswordChanged` (who, when, how) only.

Invitation tokens are `nxi_<user_id>_<secret>` with a 256-bit secret: only its SHA-256 is recorded
(as with API keys, a fast hash suffices for that much entropy). It is single-use (spent by the first
password change) and expires.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

from domain.rbac import validate_role

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}$")
_INVITE = re.compile(r"^nxi_([0-9a-f]{20})_([A-Za-z0-9_-]{43})$")
INVITE_TTL = dt.timedelta(days=7)
MIN_PASSWORD = 12
MAX_PASSWORD = 256  # argon2 accepts more; a cap keeps a megabyte "password" from being hashed


class UserError(Exception):
    """A command about users that cannot be carried out."""


class InvalidEmail(UserError, ValueError):
    def __init__(self, email: str) -> None:
        super().__init__(f"email {email!r} is not an address of the form name@domain.tld")


class WeakPassword(UserError, ValueError):
    def __init__(self, length: int) -> None:
        super().__init__(f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters, got {length}")


class UserAlreadyInvited(UserError):
    def __init__(self, email: str) -> None:
        super().__init__(f"{email!r} is already a user of this tenant")


class UnknownUser(UserError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"no user {user_id!r} in this tenant")


class UserInactive(UserError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} is deactivated")


class InvalidPassword(UserError):
    def __init__(self) -> None:
        super().__init__("the current password is not right")


class InvalidInvitation(UserError):
    def __init__(self, why: str) -> None:
        super().__init__(f"invitation token is not valid: {why}")


class RoleAlreadyHeld(UserError):
    def __init__(self, user_id: str, role: str) -> None:
        super().__init__(f"user {user_id!r} already holds role {role!r}")


class RoleNotHeld(UserError):
    def __init__(self, user_id: str, role: str) -> None:
        super().__init__(f"user {user_id!r} does not hold role {role!r}")


def normalize_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not _EMAIL.match(email):
        raise InvalidEmail(email)
    return email


def user_id_for(tenant_id: str, email: str) -> str:
    return hashlib.sha256(f"{tenant_id}\n{normalize_email(email)}".encode()).hexdigest()[:20]


def user_stream(user_id: str) -> str:
    return f"user-{user_id}"


def validate_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise WeakPassword(len(password) if isinstance(password, str) else 0)
    return password


@dataclass(frozen=True)
class Invitation:
    user_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"nxi_{self.user_id}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hashlib.sha256(self.secret.encode()).hexdigest()


def new_invitation(user_id: str) -> Invitation:
    return Invitation(user_id, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))


def parse_invitation(token: str) -> tuple[str, str] | None:
    match = _INVITE.match(token or "")
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class User:
    """A user's current facts, folded from its stream."""

    user_id: str
    tenant_id: str
    email: str
    roles: frozenset[str]
    active: bool = True
    has_password: bool = False
    invite_sha256: str | None = None  # None once spent
    invite_expires_at: str | None = None
    invited_by: str = ""
    version: int = 0  # the stream version this state was folded up to


def evolve(state: User | None, event_type: str, payload: dict[str, Any]) -> User | None:
    if event_type == "UserInvited":
        return User(payload["user_id"], payload["tenant_id"], payload["email"], frozenset({payload["role"]}),
                    invite_sha256=payload["invite_sha256"], invite_expires_at=payload["invite_expires_at"],
                    invited_by=payload["invited_by"], version=1)
    if event_type == "UserProvisioned":  # just in time, at a first single sign-on: no invitation, no password
        return User(payload["user_id"], payload["tenant_id"], payload["email"], frozenset({payload["role"]}),
                    invited_by=payload["provisioned_by"], version=1)
    if state is None:
        return None
    state = replace(state, version=state.version + 1)
    if event_type == "UserPasswordChanged":
        return replace(state, has_password=True, invite_sha256=None)
    if event_type == "RoleGranted":
        return replace(state, roles=state.roles | {payload["role"]})
    if event_type == "RoleRevoked":
        return replace(state, roles=state.roles - {payload["role"]})
    if event_type == "UserDeactivated":
        return replace(state, active=False, invite_sha256=None)
    return state


def fold(stream: list[tuple[str, dict[str, Any]]]) -> User | None:
    state: User | None = None
    for event_type, payload in stream:
        state = evolve(state, event_type, payload)
    return state


# --- decisions: (state, command) -> event (type, payload); they raise, they never write -------------

def decide_invite(state: User | None, tenant_id: str, email: str, role: str, invited_by: str,
                  invitation: Invitation, now: dt.datetime) -> tuple[str, dict[str, Any]]:
    email = normalize_email(email)
    validate_role(role)
    if state is not None:
        raise UserAlreadyInvited(email)
    return "UserInvited", {"user_id": invitation.user_id, "tenant_id": tenant_id, "email": email, "role": role,
                           "invited_by": invited_by, "invite_sha256": invitation.secret_hash,
                           "invite_expires_at": (now + INVITE_TTL).isoformat()}


def decide_provision(state: User | None, tenant_id: str, email: str, role: str,
                     provider_id: str) -> tuple[str, dict[str, Any]]:
    """A user created at its first single sign-on with the provider's default role (domain/sso.py)."""
    email = normalize_email(email)
    validate_role(role)
    if state is not None:
        raise UserAlreadyInvited(email)
    return "UserProvisioned", {"user_id": user_id_for(tenant_id, email), "tenant_id": tenant_id, "email": email,
                               "role": role, "provisioned_by": f"sso:{provider_id}"}


def check_invitation(state: User | None, secret: str, now: dt.datetime) -> User:
    """The invited user a presented token stands for; raises if it is unknown, spent or expired."""
    if state is None or state.invite_sha256 is None:
        raise InvalidInvitation("unknown or already used")
    if not hmac.compare_digest(state.invite_sha256, hashlib.sha256(secret.encode()).hexdigest()):
        raise InvalidInvitation("unknown or already used")
    if not state.active:
        raise UserInactive(state.user_id)
    if state.invite_expires_at is None or dt.datetime.fromisoformat(state.invite_expires_at) <= now:
        raise InvalidInvitation("expired")
    return state


def decide_password_change(state: User | None, user_id: str, password: str, via: str) -> tuple[str, dict[str, Any]]:
    """`via`: "invite" (the token was checked) or "self" (the signed-in user). The hash is not in the event."""
    if state is None:
        raise UnknownUser(user_id)
    if not state.active:
        raise UserInactive(user_id)
    validate_password(password)
    return "UserPasswordChanged", {"user_id": user_id, "via": via}


def decide_grant(state: User | None, user_id: str, role: str) -> tuple[str, dict[str, Any]]:
    validate_role(role)
    if state is None:
        raise UnknownUser(user_id)
    if not state.active:
        raise UserInactive(user_id)
    if role in state.roles:
        raise RoleAlreadyHeld(user_id, role)
    return "RoleGranted", {"user_id": user_id, "role": role}


def decide_revoke(state: User | None, user_id: str, role: str) -> tuple[str, dict[str, Any]]:
    validate_role(role)
    if state is None:
        raise UnknownUser(user_id)
    if role not in state.roles:
        raise RoleNotHeld(user_id, role)
    return "RoleRevoked", {"user_id": user_id, "role": role}


def decide_deactivate(state: User | None, user_id: str, reason: str) -> tuple[str, dict[str, Any]]:
    if state is None:
        raise UnknownUser(user_id)
    if not state.active:
        raise UserInactive(user_id)
    return "UserDeactivated", {"user_id": user_id, "reason": reason}
