"""Tenants and API keys: pure decisions over the facts in their ledger streams.

An API key is `nx_<key_id>_<secret>`: the key id (12 hex digits) names its ledger stream; the secret
(32 random bytes, base64url) is shown once and only its SHA-256 is recorded. A fast hash is right
here: the secret has 256 bits of entropy, so there is nothing to brute-force, and authentication sits
on the gateway's hot path. Revocation is a later event in the same stream, so a key is valid exactly
while its stream holds ApiKeyIssued and no ApiKeyRevoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

SCOPES = frozenset({"inference", "read", "admin"})
_TENANT = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
_KEY = re.compile(r"^nx_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class IdentityError(Exception):
    """A command about tenants or keys that cannot be carried out."""


class InvalidTenantId(IdentityError, ValueError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant id {tenant_id!r} must be 2-40 characters: a-z first, then a-z, 0-9 or '-'")


class InvalidScopes(IdentityError, ValueError):
    def __init__(self, scopes: object) -> None:
        super().__init__(f"scopes {scopes!r} must be a non-empty subset of {sorted(SCOPES)}")


class TenantAlreadyExists(IdentityError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} already exists")


class UnknownTenant(IdentityError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no tenant {tenant_id!r}")


class UnknownApiKey(IdentityError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key {key_id!r} in this tenant")


class ApiKeyAlreadyRevoked(IdentityError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} is already revoked")


@dataclass(frozen=True)
class Principal:
    """Who is calling: every read and write is scoped to `tenant_id`."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def tenant_stream(tenant_id: str) -> str:
    return f"tenant-{tenant_id}"


API_KEY_STREAM_PREFIX = "apikey-"


def api_key_stream(key_id: str) -> str:
    return f"{API_KEY_STREAM_PREFIX}{key_id}"


def validate_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not _TENANT.match(tenant_id):
        raise InvalidTenantId(tenant_id)
    return tenant_id


def validate_scopes(scopes: object) -> list[str]:
    if isinstance(scopes, str):
        scopes = [s.strip() for s in scopes.split(",") if s.strip()]
    if not isinstance(scopes, (list, tuple, set, frozenset)) or not scopes or not set(scopes) <= SCOPES:
        raise InvalidScopes(scopes)
    return sorted(set(scopes))


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"nx_{self.key_id}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def generate_api_key() -> NewApiKey:
    return NewApiKey(secrets.token_hex(6), base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    match = _KEY.match(token or "")
    return (match.group(1), match.group(2)) if match else None


def key_state(stream: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """Fold an API key's stream of (type, payload) into its current facts, or None if never issued."""
    state: dict[str, Any] | None = None
    for event_type, payload in stream:
        if event_type == "ApiKeyIssued":
            state = {**payload, "revoked": False}
        elif event_type == "ApiKeyRevoked" and state is not None:
            state["revoked"] = True
    return state


def authenticate(token: str, stream: list[tuple[str, dict[str, Any]]]) -> Principal | None:
    """The principal a presented key stands for, or None if it is unknown, revoked or wrong."""
    parsed = parse_api_key(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    state = key_state(stream)
    if state is None or state["revoked"] or state["key_id"] != key_id:
        return None
    if not hmac.compare_digest(state["secret_sha256"], hash_secret(secret)):
        return None
    return Principal(state["tenant_id"], key_id, frozenset(state["scopes"]))
