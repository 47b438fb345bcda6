"""The one OpenID Connect client (authlib): authorization code flow with PKCE (S256), state and nonce.

Google Workspace, Entra ID and Okta differ only in their issuer (domain/sso.issuer_for), from which
everything else is discovered (`<issuer>/.well-known/openid-configuration`). The ID token is checked
here: JWS signature against the provider's JWKS (asymmetric algorithms only, so a token "signed" with
the client secret or with `alg: none` never passes), `iss`, `aud`, `exp`/`iat`, `nonce`, `azp`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from application.sso import FederatedIdentityProvider
from domain.sso import FederatedIdentity, IdentityProviderUnavailable, IdentityRefused, InvalidAssertion

ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LEEWAY_S = 60  # clock skew tolerated between us and the provider
DISCOVERY_TTL_S = 3600.0
_documents: dict[str, tuple[float, dict[str, Any]]] = {}  # URL -> (fetched at, JSON): discovery and JWKS
try:  # authlib's httpx integration runs on httpx2 when it is installed, else on httpx
    import httpx2

    _TRANSPORT: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
except ImportError:  # pragma: no cover
    _TRANSPORT = (httpx.HTTPError,)


def _allow_private_networks() -> bool:
    """NEXUS_SSO_ALLOW_PRIVATE_NETWORKS=true: an on-premises provider (Keycloak in the same network)."""
    return os.environ.get("NEXUS_SSO_ALLOW_PRIVATE_NETWORKS", "").strip().lower() in ("1", "true", "yes")


def refuse_internal(url: str) -> None:
    """Raise unless `url` is fit for this server to fetch on a tenant admin's word.

    The issuer is chosen by a tenant admin and the JWKS and token endpoint by the issuer's discovery
    document, so without this check SSO configuration would make the server send requests inside its
    own network (cloud metadata at 169.254.169.254, internal services). Refused: link-local (always),
    private, reserved, multicast and unspecified addresses (private ones are allowed with
    NEXUS_SSO_ALLOW_PRIVATE_NETWORKS), and plain http except on loopback. Loopback stays allowed, as
    domain/sso allows http there, for development and tests. The name is resolved here and again by
    httpx: a DNS answer changed in between (rebinding) is not caught.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise IdentityProviderUnavailable(f"{url!r} names no host")
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise IdentityProviderUnavailable(f"{host} does not resolve ({exc})") from None
    loopback = True
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            continue
        loopback = False
        internal = address.is_link_local or address.is_multicast or address.is_unspecified or (
            (address.is_private or address.is_reserved) and not _allow_private_networks())
        if internal:
            raise IdentityProviderUnavailable(f"{url} resolves to {address}, an internal address; an identity "
                                              "provider must be reachable on a public address (on-premises "
                                              "providers: NEXUS_SSO_ALLOW_PRIVATE_NETWORKS=true)")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise IdentityProviderUnavailable(f"{url} is not https (plain http only on loopback)")


class OidcIdentityProvider(FederatedIdentityProvider):
    def __init__(self, issuer: str, client_id: str, client_secret: str, *, scope: str = "openid email profile",
                 timeout_s: float = 10.0) -> None:
        self.issuer = issuer.rstrip("/")
        self._client_id, self._client_secret = client_id, client_secret
        self._scope = scope
        self._timeout_s = timeout_s

    def _client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(self._client_id, self._client_secret, scope=self._scope, redirect_uri=redirect_uri,
                            code_challenge_method="S256", timeout=self._timeout_s)

    def _get(self, url: str, *, fresh: bool = False) -> dict[str, Any]:
        if not fresh and self._is_cached(url):
            return _documents[url][1]
        refuse_internal(url)
        try:
            answer = httpx.get(url, timeout=self._timeout_s)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:  # unreachable, an error status, not JSON
            raise IdentityProviderUnavailable(f"GET {url}: {exc}") from None
        _documents[url] = (time.monotonic(), document)
        return document

    def _is_cached(self, url: str) -> bool:
        cached = _documents.get(url)
        return cached is not None and time.monotonic() - cached[0] < DISCOVERY_TTL_S

    def metadata(self) -> dict[str, Any]:
        document = self._get(f"{self.issuer}/.well-known/openid-configuration")
        if document.get("issuer", "").rstrip("/") != self.issuer:  # OIDC Discovery 4.3
            raise IdentityProviderUnavailable(f"discovery names issuer {document.get('issuer')!r}, "
                                              f"expected {self.issuer!r}")
        return document

    def start(self, redirect_uri: str) -> tuple[str, dict[str, str]]:
        endpoint = self.metadata()["authorization_endpoint"]
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(endpoint, state=state, code_verifier=verifier, nonce=nonce)
        return url, {"state": state, "nonce": nonce, "code_verifier": verifier}

    def finish(self, params: Mapping[str, str], kept: Mapping[str, str], redirect_uri: str) -> FederatedIdentity:
        if params.get("error"):
            raise IdentityRefused(f"the identity provider answered {params['error']!r}: "
                                  f"{params.get('error_description') or 'no description'}")
        if not params.get("code"):
            raise InvalidAssertion("the callback carries no authorization code")
        metadata = self.metadata()
        refuse_internal(metadata["token_endpoint"])  # it receives the client secret, and it is the document's word
        try:
            with self._client(redirect_uri) as client:
                token = client.fetch_token(metadata["token_endpoint"], grant_type="authorization_code",
                                           code=params["code"], code_verifier=kept["code_verifier"])
        except OAuthError as exc:  # invalid_grant: a used, expired or stolen code; invalid_client: our secret
            raise InvalidAssertion(f"the token endpoint refused the code: {exc.error}: {exc.description}") from None
        except _TRANSPORT as exc:
            raise IdentityProviderUnavailable(f"POST {metadata['token_endpoint']}: {exc}") from None
        if "id_token" not in token:
            raise InvalidAssertion("the token endpoint answered no id_token (is 'openid' in the scope?)")
        claims = self._verified_claims(token, metadata, kept["nonce"])
        return FederatedIdentity(issuer=str(claims["iss"]).rstrip("/"), subject=str(claims["sub"]),
                                 email=str(claims.get("email") or ""), email_verified=_email_verified(claims),
                                 hosted_domain=claims.get("hd"))

    def _verified_claims(self, token: Mapping[str, Any], metadata: Mapping[str, Any], nonce: str) -> CodeIDToken:
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        registry = JWSRegistry(algorithms=[a for a in offered if a in ASYMMETRIC] or ["RS256"])
        jwks_uri = metadata["jwks_uri"]
        try:
            keys_were_cached = self._is_cached(jwks_uri)
            try:
                decoded = jwt.decode(token["id_token"], KeySet.import_key_set(self._get(jwks_uri)), registry=registry)
            except (InvalidKeyIdError, BadSignatureError):
                if not keys_were_cached:
                    raise
                # The provider rotated its keys since we cached them: under a new key id, or (some providers)
                # under the same one, which only shows as a bad signature. One fresh fetch settles which.
                decoded = jwt.decode(token["id_token"], KeySet.import_key_set(self._get(jwks_uri, fresh=True)),
                                     registry=registry)
        except (BadSignatureError, InvalidKeyIdError):
            raise InvalidAssertion("the ID token's signature does not verify with the provider's published keys") from None
        except JoseError as exc:
            raise InvalidAssertion(f"the ID token is not a valid signed JWT ({exc.error})") from None
        options = {"iss": {"essential": True, "value": metadata["issuer"]},
                   "aud": {"essential": True, "value": self._client_id}}
        claims = CodeIDToken(decoded.claims, decoded.header, options,
                             {"nonce": nonce, "client_id": self._client_id, "access_token": token.get("access_token")})
        try:
            claims.validate(leeway=LEEWAY_S)
        except ExpiredTokenError:
            raise InvalidAssertion(f"the ID token expired at {decoded.claims.get('exp')} "
                                   f"(now {int(time.time())})") from None
        except ClaimError as exc:
            expected = {"aud": self._client_id, "iss": metadata["issuer"], "nonce": "the nonce this browser was sent with"}
            raise InvalidAssertion(f"claim {exc.claim!r} is {decoded.claims.get(exc.claim)!r}, expected "
                                   f"{expected.get(exc.claim, 'a valid value')!r}") from None
        return claims


def _email_verified(claims: Mapping[str, Any]) -> bool:
    """`email_verified` (OIDC core); Entra ID instead sends `xms_edov` (the domain owner verified it)."""
    verified = claims.get("email_verified", claims.get("xms_edov", False))
    return verified is True or verified == "true"
