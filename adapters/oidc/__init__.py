"""Identity provider adapters for single sign-on (application/sso.FederatedIdentityProvider)."""

from __future__ import annotations

from adapters.oidc.client import OidcIdentityProvider
from domain.sso import SsoProvider


def connect(provider: SsoProvider, client_secret: str) -> OidcIdentityProvider:
    """Every kind (google, azure, okta, oidc) is the same OpenID Connect client with its own issuer."""
    return OidcIdentityProvider(provider.issuer, provider.client_id, client_secret)
