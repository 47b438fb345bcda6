"""Single sign-on: a tenant's identity providers, and what an asserted identity must satisfy.

One generic OpenID Connect client serves every provider; Google Workspace, Entra ID (Azure AD) and
Okta are presets of its issuer. A tenant's providers are facts in its stream `sso-<tenant>`
(`SsoProviderConfigured`, `SsoProviderRemoved`); the client secret is in the event only as a sealed
envelope (the same AES-GCM sealing as deployment credentials), never in plain text.

The checks here are the ones every protocol shares (OIDC now, SAML later): the provider has proven who
the person is (signature, audience, expiry, nonce: the adapter's job); whether that identity may enter
this tenant (a verified email in an allowed domain) is decided here, purely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from domain.rbac import validate_role
from domain.users import normalize_email

SCHEMA_VERSION = 1
KINDS = ("google", "azure", "okta", "oidc")
GOOGLE_ISSUER = "https://accounts.google.com"
_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# Entra's discovery names its issuer with the directory's GUID, so a domain name here would never match
_DIRECTORY = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class SsoError(Exception):
    """Single sign-on cannot go on; the message says what was expected and what was found."""


class InvalidSsoProvider(SsoError, ValueError):
    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field}: expected {expected}, got {value!r}")
        self.field = field


class UnknownSsoProvider(SsoError):
    def __init__(self, tenant_id: str, provider_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} has no single sign-on provider {provider_id!r}")


class InvalidSsoState(SsoError):
    """The callback does not belong to a sign-in this browser started (forged, replayed, expired)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"single sign-on state refused: {why}; start the sign-in again")


class InvalidAssertion(SsoError):
    """The provider's answer does not prove anything (signature, audience, expiry, nonce, issuer)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the identity provider's token was refused: {why}")


class IdentityRefused(SsoError):
    """The identity is proven, but it may not enter this tenant."""


class IdentityProviderUnavailable(SsoError):
    def __init__(self, why: str) -> None:
        super().__init__(f"the identity provider could not be reached or answered an error: {why}")


@dataclass(frozen=True)
class FederatedIdentity:
    """What a provider asserted, after its signature and freshness were checked."""

    issuer: str
    subject: str
    email: str
    email_verified: bool
    hosted_domain: str | None = None  # Google's `hd`: set only for Google Workspace accounts


@dataclass(frozen=True)
class SsoProvider:
    tenant_id: str
    provider_id: str
    name: str
    kind: str
    issuer: str
    client_id: str
    client_secret: Mapping[str, str] | None  # the sealed envelope (adapters/secrets.py)
    allowed_domains: tuple[str, ...]
    default_role: str | None  # None: only existing users may sign in (no just-in-time provisioning)
    # whoever configured it could grant the owner role (owners.write); else it never signs an owner in
    admits_owners: bool = False

    def public(self) -> dict[str, Any]:
        """As it may be shown to anyone: no client id, no secret."""
        return {"id": self.provider_id, "name": self.name, "kind": self.kind}

    def payload(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "tenant_id": self.tenant_id, "provider_id": self.provider_id,
                "name": self.name, "kind": self.kind, "issuer": self.issuer, "client_id": self.client_id,
                "client_secret": dict(self.client_secret) if self.client_secret else None,
                "allowed_domains": list(self.allowed_domains), "default_role": self.default_role,
                "admits_owners": self.admits_owners}


def sso_stream(tenant_id: str) -> str:
    return f"sso-{tenant_id}"


def sealing_name(provider_id: str) -> str:
    """The name a client secret is sealed under: '#' never occurs in a deployment name, so an envelope
    copied between a deployment and an SSO provider does not open."""
    return f"#sso/{provider_id}"


def issuer_for(kind: str, issuer: str | None, directory: str | None) -> str:
    """The issuer (discovery base URL) a preset stands for; `directory` is the Entra ID tenant id."""
    if kind not in KINDS:
        raise InvalidSsoProvider("kind", kind, f"one of {list(KINDS)}")
    if kind == "google":  # the Workspace rule (`hd`, admitted_email) is only meaningful for Google itself
        if issuer and issuer.rstrip("/") != GOOGLE_ISSUER:
            raise InvalidSsoProvider("issuer", issuer, f"nothing, or {GOOGLE_ISSUER}, for kind google")
        return GOOGLE_ISSUER
    if kind == "azure" and not issuer:
        if not directory or not _DIRECTORY.match(directory):
            raise InvalidSsoProvider("directory", directory, "the Entra ID directory (tenant) id, a GUID, or an issuer")
        return f"https://login.microsoftonline.com/{directory.lower()}/v2.0"
    if not issuer:
        raise InvalidSsoProvider("issuer", issuer, f"the issuer URL of the {kind} provider")
    parts = urlsplit(issuer)
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
    if not secure or not parts.hostname or parts.query or parts.fragment:
        raise InvalidSsoProvider("issuer", issuer, "an https:// URL without query (http:// only on loopback)")
    return issuer.rstrip("/")


def new_provider(tenant_id: str, *, provider_id: str, name: str, kind: str, issuer: str | None,
                 directory: str | None, client_id: str, client_secret: Mapping[str, str] | None,
                 allowed_domains: Iterable[str], default_role: str | None, admits_owners: bool = False) -> SsoProvider:
    if not isinstance(provider_id, str) or not _PROVIDER_ID.match(provider_id):
        raise InvalidSsoProvider("providerId", provider_id, f"a slug matching {_PROVIDER_ID.pattern}")
    if not name or len(name) > 80:
        raise InvalidSsoProvider("name", name, "1 to 80 characters")
    resolved = issuer_for(kind, issuer, directory)
    if not client_id or len(client_id) > 255:
        raise InvalidSsoProvider("clientId", client_id, "the client id the provider issued (1 to 255 characters)")
    if client_secret is None:
        raise InvalidSsoProvider("clientSecret", None, "the client secret (required when the provider is new)")
    domains = tuple(sorted({d.strip().lower() for d in allowed_domains}))
    if not domains or not all(_DOMAIN.match(d) for d in domains):
        # without a domain, anyone with an account at a public provider (any gmail address) could walk in
        raise InvalidSsoProvider("allowedDomains", list(allowed_domains), "one or more email domains, e.g. example.com")
    if default_role is not None:
        validate_role(default_role)
        if default_role == "owner":
            raise InvalidSsoProvider("defaultRole", default_role, "a role other than owner (owners are granted by owners)")
    return SsoProvider(tenant_id, provider_id, name, kind, resolved, client_id, client_secret, domains, default_role,
                       admits_owners)


# --- the tenant's providers, folded from its stream ----------------------------------------------

def evolve(providers: dict[str, SsoProvider], event_type: str, payload: Mapping[str, Any]) -> dict[str, SsoProvider]:
    if event_type == "SsoProviderConfigured":
        provider = SsoProvider(payload["tenant_id"], payload["provider_id"], payload["name"], payload["kind"],
                               payload["issuer"], payload["client_id"], payload["client_secret"],
                               tuple(payload["allowed_domains"]), payload["default_role"],
                               bool(payload.get("admits_owners", False)))
        return {**providers, provider.provider_id: provider}
    if event_type == "SsoProviderRemoved":
        return {k: v for k, v in providers.items() if k != payload["provider_id"]}
    return providers


def fold(events: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, SsoProvider]:
    providers: dict[str, SsoProvider] = {}
    for event_type, payload in events:
        providers = evolve(providers, event_type, payload)
    return providers


def decide_remove(providers: Mapping[str, SsoProvider], tenant_id: str, provider_id: str) -> dict[str, Any]:
    if provider_id not in providers:
        raise UnknownSsoProvider(tenant_id, provider_id)
    return {"schema_version": SCHEMA_VERSION, "tenant_id": tenant_id, "provider_id": provider_id}


# --- may this identity enter? -----------------------------------------------------------------------

def admitted_email(provider: SsoProvider, identity: FederatedIdentity) -> str:
    """The email under which the identity enters the tenant; raises IdentityRefused with the reason."""
    if not identity.email:
        raise IdentityRefused(f"{provider.name} did not assert an email address (ask for the 'email' scope)")
    try:
        email = normalize_email(identity.email)
    except ValueError:
        raise IdentityRefused(f"{provider.name} asserted {identity.email!r}, which is not an email address") from None
    if not identity.email_verified:
        raise IdentityRefused(f"{provider.name} has not verified the email {email!r}")
    domain = email.rpartition("@")[2]
    if domain not in provider.allowed_domains:
        raise IdentityRefused(f"email domain {domain!r} is not allowed for {provider.name}; "
                              f"allowed: {', '.join(provider.allowed_domains)}")
    if provider.kind == "google" and (identity.hosted_domain or "").lower() not in provider.allowed_domains:
        # a personal Google account can carry (and verify) any address; only Workspace accounts have `hd`
        raise IdentityRefused(f"{email!r} is not a Google Workspace account of an allowed domain "
                              f"(hd={identity.hosted_domain!r})")
    return email


def may_sign_in(provider: SsoProvider, email: str, roles: Iterable[str]) -> None:
    """Raises IdentityRefused when this provider may not speak for a user holding `roles`.

    Whoever configures a provider (sso.write, an admin's) decides which IdP vouches for the tenant's
    addresses, so it could point one at an IdP it controls and have it assert anyone's email. Owners are
    granted only by owners (owners.write): so only a provider configured by someone holding owners.write
    signs an owner in; reconfigured by anyone else, it loses that.
    """
    if "owner" in roles and not provider.admits_owners:
        raise IdentityRefused(f"{email!r} holds the owner role in tenant {provider.tenant_id!r}, and {provider.name} was "
                              "not configured by an owner, so it cannot sign owners in; sign in with a password, or "
                              "have an owner save the provider's configuration")


def safe_next(path: str | None) -> str:
    """Where to send the browser after sign-in: a path on this origin only, else '/'.

    '//host' and '/\\host' are protocol-relative to browsers; a scheme or control character is refused.
    """
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")) or len(path) > 2000:
        return "/"
    if any(ord(c) < 0x20 or c == "\\" for c in path) or urlsplit(path).netloc or urlsplit(path).scheme:
        return "/"
    return path
