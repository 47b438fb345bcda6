"""Single sign-on: a tenant's identity providers (commands) and the sign-in through one of them.

A sign-in has two legs. `begin` asks the provider adapter for the URL to send the browser to and what
to keep until it comes back (state, nonce, PKCE verifier); that is signed into a short-lived cookie
bound to this browser. `complete` checks the callback against that cookie, spends the state (once
only), lets the adapter prove the identity, decides here whether it may enter the tenant, finds or
provisions the user (events, actor `sso:<provider>`), and starts a session exactly like password
sign-in. Any refusal raises before the ledger is touched.

`FederatedIdentityProvider` is the port: OIDC is one adapter (adapters/oidc/); SAML would be another
(its `start` an AuthnRequest redirect, its `finish` a verified assertion), and nothing here changes.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from application.deployments import CredentialSealer
from application.ports import Ledger
from application.sessions import CredentialStore, SessionService, TokenPair
from application.users import UserService
from domain import sso
from domain import users as user_rules
from domain.ledger import NewEvent, Receipt
from domain.rbac import Actor
from domain.sso import FederatedIdentity, SsoProvider

LOGIN_TTL = dt.timedelta(minutes=10)
LOGIN_PURPOSE = "sso_login"


class FederatedIdentityProvider(abc.ABC):
    """An external identity provider (OIDC now, SAML later) that vouches for who a person is."""

    @abc.abstractmethod
    def start(self, redirect_uri: str) -> tuple[str, dict[str, str]]:
        """(the URL to send the browser to, what to keep until the callback; it includes `state`)."""

    @abc.abstractmethod
    def finish(self, params: Mapping[str, str], kept: Mapping[str, str], redirect_uri: str) -> FederatedIdentity:
        """The identity the provider asserts, its signature, audience, expiry and nonce checked."""


# a provider's configuration and its opened client secret -> the adapter that speaks its protocol
ProviderFactory = Callable[[SsoProvider, str], FederatedIdentityProvider]


class SsoService:
    def __init__(self, ledger: Ledger, sealer: CredentialSealer, users: UserService, sessions: SessionService,
                 marks: CredentialStore, connect: ProviderFactory) -> None:
        self._ledger = ledger
        self._sealer = sealer
        self._users = users
        self._sessions = sessions
        self._marks = marks
        self._connect = connect

    # --- configuration -------------------------------------------------------------------------------

    def _load(self, tenant_id: str) -> tuple[int, dict[str, SsoProvider]]:
        events = self._ledger.read_stream(sso.sso_stream(tenant_id))
        return len(events), sso.fold((e.type, orjson.loads(e.payload)) for e in events)

    def _append(self, tenant_id: str, version: int, event_type: str, payload: dict[str, Any], actor: str,
                address: str) -> Receipt:
        stream = sso.sso_stream(tenant_id)
        event = NewEvent(stream, event_type, payload, tenant_id=tenant_id,
                         metadata={"actor": actor, "client_address": address})
        [receipt] = self._ledger.append([event], {stream: version})
        return receipt

    def configure(self, actor: Actor, *, provider_id: str, name: str, kind: str, client_id: str,
                  allowed_domains: Iterable[str], address: str, issuer: str | None = None,
                  directory: str | None = None, client_secret: str | None = None,
                  default_role: str | None = None) -> Receipt:
        """Add a provider, or replace the one with that id; without `client_secret` the sealed one is kept."""
        actor.require("sso.write")
        version, providers = self._load(actor.tenant_id)
        existing = providers.get(provider_id)
        sealed = (self._sealer.seal(actor.tenant_id, sso.sealing_name(provider_id), client_secret) if client_secret
                  else existing.client_secret if existing else None)
        provider = sso.new_provider(actor.tenant_id, provider_id=provider_id, name=name, kind=kind, issuer=issuer,
                                    directory=directory, client_id=client_id, client_secret=sealed,
                                    allowed_domains=allowed_domains, default_role=default_role,
                                    admits_owners=actor.can("owners.write"))
        return self._append(actor.tenant_id, version, "SsoProviderConfigured", provider.payload(), actor.subject,
                            address)

    def remove(self, actor: Actor, provider_id: str, address: str) -> Receipt:
        actor.require("sso.write")
        version, providers = self._load(actor.tenant_id)
        payload = sso.decide_remove(providers, actor.tenant_id, provider_id)
        return self._append(actor.tenant_id, version, "SsoProviderRemoved", payload, actor.subject, address)

    def providers(self, actor: Actor) -> list[SsoProvider]:
        """The tenant's providers as configured (the secret stays sealed; resolvers never show it)."""
        actor.require("sso.read")
        return sorted(self._load(actor.tenant_id)[1].values(), key=lambda p: p.provider_id)

    def public_providers(self, tenant_id: str) -> list[dict[str, Any]]:
        """For the sign-in page: id, name and kind only. An unknown tenant simply has none."""
        return [p.public() for p in sorted(self._load(tenant_id)[1].values(), key=lambda p: p.provider_id)]

    # --- sign-in -------------------------------------------------------------------------------------

    def _provider(self, tenant_id: str, provider_id: str) -> tuple[SsoProvider, FederatedIdentityProvider]:
        found = self._load(tenant_id)[1].get(provider_id)
        if found is None or found.client_secret is None:
            raise sso.UnknownSsoProvider(tenant_id, provider_id)
        secret = self._sealer.open(tenant_id, sso.sealing_name(provider_id), found.client_secret)
        return found, self._connect(found, secret)

    def begin(self, tenant_id: str, provider_id: str, redirect_uri: str, next_path: str | None) -> tuple[str, str]:
        """(the provider's authorization URL, the signed login cookie that binds the callback to this browser)."""
        _, idp = self._provider(tenant_id, provider_id)
        url, kept = idp.start(redirect_uri)
        login = {"tid": tenant_id, "pid": provider_id, "next": sso.safe_next(next_path), "kept": kept}
        return url, self._sessions.sign_state(login, LOGIN_PURPOSE, LOGIN_TTL)

    def complete(self, params: Mapping[str, str], login_cookie: str | None, redirect_uri: str,
                 address: str) -> tuple[TokenPair, str]:
        """(the new session, the path to send the browser to). Raises an SsoError saying what was wrong."""
        login = self._sessions.open_state(login_cookie or "", LOGIN_PURPOSE)
        if login is None:
            raise sso.InvalidSsoState("no sign-in was started in this browser, or it expired or was altered")
        kept: dict[str, str] = login["kept"]
        if not hmac.compare_digest(str(params.get("state", "")), kept.get("state", "")):
            raise sso.InvalidSsoState("the state does not match the sign-in this browser started")
        expires = dt.datetime.fromtimestamp(login["exp"], dt.UTC)
        if not self._marks.spend_once(hashlib.sha256(kept["state"].encode()).hexdigest(), expires):
            raise sso.InvalidSsoState("this sign-in was already completed once (a replayed callback)")
        provider, idp = self._provider(login["tid"], login["pid"])
        identity = idp.finish(params, kept, redirect_uri)
        if identity.issuer != provider.issuer:
            raise sso.InvalidAssertion(f"issuer {identity.issuer!r}, expected {provider.issuer!r}")
        email = sso.admitted_email(provider, identity)
        user = self._users.state(user_rules.user_id_for(provider.tenant_id, email))
        if user is None:
            if provider.default_role is None:
                raise sso.IdentityRefused(f"{email!r} is not a user of tenant {provider.tenant_id!r}, and "
                                          f"{provider.name} does not create users (no default role); ask an admin "
                                          "to invite you")
            user = self._users.provision(provider.tenant_id, email, provider.default_role, provider.provider_id,
                                         address)
        if not user.active:
            raise sso.IdentityRefused(f"user {email!r} is deactivated in tenant {provider.tenant_id!r}")
        sso.may_sign_in(provider, email, user.roles)
        return self._sessions.start_session(user), login["next"]
