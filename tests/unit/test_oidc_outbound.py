"""The OIDC adapter fetches URLs a tenant admin chose (the issuer) or that the issuer's discovery document
names (JWKS, token endpoint): none of them may be an internal address of the server's network (link-local
cloud metadata always; private ranges unless NEXUS_SSO_ALLOW_PRIVATE_NETWORKS), or SSO configuration would
be a way to make the server send requests inside its own network."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from adapters.oidc import client as oidc
from domain.sso import IdentityProviderUnavailable

ISSUER = "https://idp.example.com"


class Fetched:
    def __init__(self, documents: dict[str, dict[str, Any]]) -> None:
        self.documents, self.urls = documents, []

    def __call__(self, url: str, **_: Any) -> Any:
        self.urls.append(url)
        document = self.documents[url]

        class Answer:
            def raise_for_status(self) -> None: ...
            def json(self) -> dict[str, Any]:
                return document
        return Answer()


def resolving(monkeypatch: pytest.MonkeyPatch, addresses: dict[str, str]) -> None:
    def getaddrinfo(host: str, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addresses[host], 443))]
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc, "_documents", {})
    monkeypatch.delenv("NEXUS_SSO_ALLOW_PRIVATE_NETWORKS", raising=False)


@pytest.mark.parametrize("address", ["169.254.169.254", "10.0.0.7", "192.168.1.1", "0.0.0.0"])
def test_an_issuer_on_an_internal_address_is_never_fetched(monkeypatch, address):
    fetched = Fetched({f"{ISSUER}/.well-known/openid-configuration": {"issuer": ISSUER}})
    monkeypatch.setattr(oidc.httpx, "get", fetched)
    resolving(monkeypatch, {"idp.example.com": address})
    with pytest.raises(IdentityProviderUnavailable, match="internal address"):
        oidc.OidcIdentityProvider(ISSUER, "c", "s").metadata()
    assert fetched.urls == []


def test_a_discovery_document_cannot_point_the_jwks_at_cloud_metadata(monkeypatch):
    discovery = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize", "token_endpoint": f"{ISSUER}/token",
                 "jwks_uri": "http://metadata.internal/latest/meta-data/"}
    fetched = Fetched({f"{ISSUER}/.well-known/openid-configuration": discovery})
    monkeypatch.setattr(oidc.httpx, "get", fetched)
    resolving(monkeypatch, {"idp.example.com": "93.184.216.34", "metadata.internal": "169.254.169.254"})
    provider = oidc.OidcIdentityProvider(ISSUER, "c", "s")
    with pytest.raises(IdentityProviderUnavailable, match="internal address"):
        provider._verified_claims({"id_token": "a.b.c"}, provider.metadata(), "nonce")
    assert fetched.urls == [f"{ISSUER}/.well-known/openid-configuration"]


def test_private_networks_can_be_allowed_for_an_on_premises_provider_but_never_link_local(monkeypatch):
    monkeypatch.setenv("NEXUS_SSO_ALLOW_PRIVATE_NETWORKS", "true")
    fetched = Fetched({f"{ISSUER}/.well-known/openid-configuration": {"issuer": ISSUER}})
    monkeypatch.setattr(oidc.httpx, "get", fetched)
    resolving(monkeypatch, {"idp.example.com": "10.0.0.7"})
    assert oidc.OidcIdentityProvider(ISSUER, "c", "s").metadata() == {"issuer": ISSUER}
    monkeypatch.setattr(oidc, "_documents", {})
    resolving(monkeypatch, {"idp.example.com": "169.254.169.254"})
    with pytest.raises(IdentityProviderUnavailable, match="internal address"):
        oidc.OidcIdentityProvider(ISSUER, "c", "s").metadata()


def test_loopback_stays_allowed_for_development_and_tests(monkeypatch):
    fetched = Fetched({"http://127.0.0.1:9/.well-known/openid-configuration": {"issuer": "http://127.0.0.1:9"}})
    monkeypatch.setattr(oidc.httpx, "get", fetched)
    assert oidc.OidcIdentityProvider("http://127.0.0.1:9", "c", "s").metadata()["issuer"] == "http://127.0.0.1:9"
