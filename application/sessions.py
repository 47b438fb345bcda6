"""Password sign-in and sessions: short-lived JWT access tokens plus rotating, one-time refresh tokens.

- Access token: HS256 JWT (10 minutes) naming the user, tenant and session family. Every request that
  presents it reads the user's stream (one indexed query) and the family's state, so a role change,
  a deactivation or a sign-out takes effect on the next request, not at expiry.
- Refresh token: `nxr_<256-bit secret>`, stored as SHA-256 in `auth.refresh_tokens`. Using one marks it
  used and issues a new pair in the same family; presenting a used or revoked one again means it was
  copied, so the whole family is revoked (the thief and the user both have to sign in again).
- Sign-in answers the same `InvalidCredentials` for an unknown user, a deactivated one and a wrong
  password, and verifies against a dummy hash when there is no user, so timing does not tell either.
"""

from __future__ import annotations

import abc
import base64
import datetime as dt
import hashlib
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from application.token_bucket import TokenBucket
from application.users import UserService
from domain import users
from domain.rbac import Actor, permissions_for
from domain.users import User

ACCESS_TTL = dt.timedelta(minutes=10)
REFRESH_TTL = dt.timedelta(days=14)
JWT_ALG = "HS256"
JWT_KEY_FILE = "jwt.key"
_ISSUER = "nexusai"


class SessionError(Exception):
    """Sign-in, refresh or sign-out refused."""


class InvalidCredentials(SessionError):
    def __init__(self) -> None:
        super().__init__("email, password or tenant is not right")  # one answer, whatever was wrong


class TooManyAttempts(SessionError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many sign-in attempts; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class InvalidRefreshToken(SessionError):
    def __init__(self, why: str = "unknown, expired or revoked") -> None:
        super().__init__(f"refresh token is not valid: {why}")


@dataclass(frozen=True)
class RefreshRecord:
    token_sha256: str
    family_id: uuid.UUID
    user_id: str
    tenant_id: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_at: dt.datetime
    refresh_token: str
    refresh_expires_at: dt.datetime
    user_id: str
    tenant_id: str


class CredentialStore(abc.ABC):
    """Password hashes and refresh tokens, outside the ledger."""

    @abc.abstractmethod
    def set_password_hash(self, tenant_id: str, user_id: str, password_hash: str) -> None:
        """Store (or replace) the user's argon2id hash."""

    @abc.abstractmethod
    def password_hash(self, user_id: str) -> str | None:
        """The user's hash, or None."""

    @abc.abstractmethod
    def add_refresh(self, record: RefreshRecord) -> None:
        """Record a newly issued refresh token."""

    @abc.abstractmethod
    def use_refresh(self, token_sha256: str, now: dt.datetime) -> tuple[RefreshRecord | None, bool]:
        """Spend a token: (its record or None, True only for the first use of a live token)."""

    @abc.abstractmethod
    def revoke_family(self, family_id: uuid.UUID, now: dt.datetime) -> int:
        """Revoke every token of a family; how many were live."""

    @abc.abstractmethod
    def family_revoked(self, family_id: uuid.UUID) -> bool:
        """Whether the family has been revoked (sign-out or reuse)."""

    @abc.abstractmethod
    def spend_once(self, digest: str, expires_at: dt.datetime) -> bool:
        """Mark a one-time value (an SSO state) used: True the first time, False ever after."""


def load_jwt_key(key_dir: Path) -> bytes:
    """`<key_dir>/jwt.key` (0600), created on first use; NEXUS_JWT_KEY (hex) overrides it."""
    text = os.environ.get("NEXUS_JWT_KEY", "").strip()
    if text:
        return bytes.fromhex(text)
    path = key_dir / JWT_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # atomic: concurrent first starts agree on one key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class SessionService:
    def __init__(self, users_service: UserService, store: CredentialStore, jwt_key: bytes, *, platform_tenant: str,
                 limiter: TokenBucket | None = None, hasher: PasswordHasher | None = None,
                 access_ttl: dt.timedelta = ACCESS_TTL, refresh_ttl: dt.timedelta = REFRESH_TTL) -> None:
        self._users = users_service
        self._store = store
        self._key = jwt_key
        self._platform = platform_tenant
        self.limiter = limiter or TokenBucket()
        self._hasher = hasher or users_service.hasher
        self.access_ttl, self.refresh_ttl = access_ttl, refresh_ttl
        self._dummy = self._hasher.hash(secrets.token_hex(16))

    # --- sign-in, refresh, sign-out -----------------------------------------------------------------

    def sign_in(self, tenant_id: str, email: str, password: str, client_address: str) -> TokenPair:
        wait = self.limiter.take(f"{(email or '').strip().lower()}|{client_address}")
        if wait:
            raise TooManyAttempts(wait)
        try:
            user_id = users.user_id_for(tenant_id, email)
        except users.InvalidEmail:
            raise InvalidCredentials() from None
        state = self._users.state(user_id)
        stored = self._store.password_hash(user_id) if state is not None else None
        ok = self._verify(stored or self._dummy, password)
        if not ok or stored is None or state is None or not state.active or state.tenant_id != tenant_id:
            raise InvalidCredentials()
        return self._issue(state.tenant_id, user_id, uuid.uuid4())

    def start_session(self, user: User) -> TokenPair:
        """A session for a user someone else has authenticated (single sign-on, application/sso.py)."""
        if not user.active:
            raise InvalidCredentials()
        return self._issue(user.tenant_id, user.user_id, uuid.uuid4())

    def refresh(self, refresh_token: str) -> TokenPair:
        now = dt.datetime.now(dt.UTC)
        record, first_use = self._store.use_refresh(_sha256(refresh_token or ""), now)
        if record is None:
            raise InvalidRefreshToken()
        if not first_use:
            if record.expires_at > now:  # a live token presented twice: someone copied it
                self._store.revoke_family(record.family_id, now)
                raise InvalidRefreshToken("already used; every session of this sign-in is now revoked")
            raise InvalidRefreshToken("expired")
        state = self._users.state(record.user_id)
        if state is None or not state.active:
            self._store.revoke_family(record.family_id, now)
            raise InvalidRefreshToken("the user is deactivated")
        return self._issue(record.tenant_id, record.user_id, record.family_id)

    def sign_out(self, refresh_token: str | None = None, access_token: str | None = None) -> bool:
        """Revoke the session family named by either token; True if one was found."""
        family: uuid.UUID | None = None
        if refresh_token:
            record, _ = self._store.use_refresh(_sha256(refresh_token), dt.datetime.now(dt.UTC))
            family = record.family_id if record else None
        if family is None and access_token:
            claims = self._claims(access_token)
            family = uuid.UUID(claims["fam"]) if claims else None
        if family is None:
            return False
        self._store.revoke_family(family, dt.datetime.now(dt.UTC))
        return True

    # --- access tokens -------------------------------------------------------------------------------

    def authenticate(self, access_token: str) -> Actor | None:
        """The actor an access token stands for now (current roles), or None if expired, revoked or inactive."""
        return self._current(self._claims(access_token))

    def session_alive(self, access_token: str) -> bool:
        """Whether the session an access token (made by us, expired or not) belongs to still stands: not signed
        out, its user active. For connections authenticated once with it (a GraphQL websocket): they end with
        the session, not with the 10-minute token, which the console renews over HTTP meanwhile."""
        return self._current(self._claims(access_token, verify_exp=False)) is not None

    def _current(self, claims: dict | None) -> Actor | None:
        if claims is None:
            return None
        state = self._users.state(claims["sub"])
        if state is None or not state.active or state.tenant_id != claims["tid"]:
            return None
        if self._store.family_revoked(uuid.UUID(claims["fam"])):
            return None
        return Actor(state.tenant_id, f"user:{state.user_id}",
                     permissions_for(state.tenant_id, roles=state.roles, platform_tenant=self._platform))

    def sign_state(self, claims: dict[str, Any], purpose: str, ttl: dt.timedelta) -> str:
        """A short-lived token that only this service can have made (the SSO login cookie); never an access token."""
        if purpose == "access":
            raise ValueError("access tokens are issued by a sign-in, not by sign_state")
        now = int(time.time())
        return jwt.encode({**claims, "iss": _ISSUER, "typ": purpose, "iat": now, "exp": now + int(ttl.total_seconds())},
                          self._key, algorithm=JWT_ALG)

    def open_state(self, token: str, purpose: str) -> dict[str, Any] | None:
        """The claims of a token made by `sign_state` for `purpose`, or None if altered, expired or another kind."""
        try:
            claims = jwt.decode(token or "", self._key, algorithms=[JWT_ALG], issuer=_ISSUER,
                                options={"require": ["exp", "iat", "iss"]})
        except jwt.PyJWTError:
            return None
        return claims if claims.get("typ") == purpose else None

    def subject_of(self, access_token: str, *, expired_too: bool = False) -> str | None:
        """The user a correctly signed, unexpired (or, with `expired_too`, expired) access token names; no
        database read (for rate limits; a websocket counts against the user it was authenticated as)."""
        claims = self._claims(access_token, verify_exp=not expired_too)
        return claims["sub"] if claims else None

    def _claims(self, token: str, *, verify_exp: bool = True) -> dict | None:
        try:
            claims = jwt.decode(token, self._key, algorithms=[JWT_ALG], issuer=_ISSUER,
                                options={"require": ["exp", "iat", "sub", "iss"], "verify_exp": verify_exp})
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != "access" or not isinstance(claims.get("tid"), str) or "fam" not in claims:
            return None
        return claims

    def _issue(self, tenant_id: str, user_id: str, family: uuid.UUID) -> TokenPair:
        now = dt.datetime.now(dt.UTC)
        access_exp = now + self.access_ttl
        access = jwt.encode({"iss": _ISSUER, "sub": user_id, "tid": tenant_id, "fam": str(family), "typ": "access",
                             "iat": int(now.timestamp()), "exp": int(access_exp.timestamp()),
                             "jti": secrets.token_hex(8)}, self._key, algorithm=JWT_ALG)
        refresh = "nxr_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        refresh_exp = now + self.refresh_ttl
        self._store.add_refresh(RefreshRecord(_sha256(refresh), family, user_id, tenant_id, refresh_exp))
        return TokenPair(access, access_exp, refresh, refresh_exp, user_id, tenant_id)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password or "")
        except (VerificationError, InvalidHashError):
            return False
