"""A small, real OpenID Connect provider for tests: discovery, JWKS (an RSA key made with `cryptography`),
`/authorize` that signs in one configured test user without asking and redirects back with a code, and
`/token` that checks the client secret, the single use of the code, the redirect URI and PKCE (S256)
before answering an RS256-signed ID token.

Tests bend the next ID token to see that our side refuses it: `tamper(aud=..., nonce=..., exp=...)`
overrides claims, `sign_with_rogue_key()` signs with a key that is not in the JWKS (same `kid`).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.server import ServerThread


@dataclass
class TestUser:
    __test__ = False  # not a test class: the person the provider signs in

    email: str
    email_verified: bool = True
    sub: str = field(default_factory=lambda: secrets.token_hex(8))


def _b64url_sha256(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")


class FakeOidcProvider:
    def __init__(self, client_id: str, client_secret: str, user: TestUser) -> None:
        self.client_id, self.client_secret, self.user = client_id, client_secret, user
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # Its own key id: the API caches a provider's keys by URL, and a later provider on a reused port
        # with the same id would be checked against this one's key.
        self.kid = f"test-key-{secrets.token_hex(4)}"
        self._denial: str | None = None
        self._algorithm = "RS256"
        self._rogue: rsa.RSAPrivateKey | None = None
        self._overrides: dict[str, Any] = {}
        self._codes: dict[str, dict[str, str]] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self._server = ServerThread(Starlette(routes=[
            Route("/.well-known/openid-configuration", self._discovery),
            Route("/jwks", self._jwks),
            Route("/authorize", self._authorize),
            Route("/token", self._token, methods=["POST"]),
        ]))
        self.issuer = self._server.url

    # --- test knobs ----------------------------------------------------------------------------------

    def tamper(self, **claims: Any) -> None:
        """Override these claims in the next ID token (None removes the claim)."""
        self._overrides.update(claims)

    def sign_with_rogue_key(self) -> None:
        """Sign the next ID token with a key that is not published, under the published key's id."""
        self._rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def sign_with_algorithm(self, algorithm: str) -> None:
        """Sign the next ID token with `none` (unsigned) or `HS256` keyed by the client secret (the classic
        algorithm confusion: a relying party that accepts it lets anyone with the secret forge tokens)."""
        self._algorithm = algorithm

    def rotate_key(self, *, keep_id: bool = False) -> None:
        """Replace the signing key and (unless `keep_id`, as some providers do) its id."""
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if not keep_id:
            self.kid = f"test-key-{secrets.token_hex(4)}"

    def deny(self, error: str = "access_denied") -> None:
        """The next /authorize sends the browser back with an error instead of a code (the user said no)."""
        self._denial = error

    def __enter__(self) -> FakeOidcProvider:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    # --- endpoints -----------------------------------------------------------------------------------

    async def _discovery(self, _: Request) -> Response:
        return JSONResponse({
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })

    async def _jwks(self, _: Request) -> Response:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

    async def _authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return JSONResponse({"error": "invalid_request", "error_description": "PKCE S256 required"}, 400)
        if self._denial is not None:
            error, self._denial = self._denial, None
            back = {"error": error, "error_description": "The user declined", "state": q.get("state", "")}
            return RedirectResponse(f"{q['redirect_uri']}?{urlencode(back)}", 302)
        code = secrets.token_urlsafe(24)
        self._codes[code] = {"redirect_uri": q["redirect_uri"], "nonce": q.get("nonce", ""),
                             "challenge": q["code_challenge"]}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}", 302)

    async def _token(self, request: Request) -> Response:
        form = dict(await request.form())
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
        if client_id != self.client_id or client_secret != self.client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self._codes.pop(form.get("code", ""), None)  # a code works once
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown or used code"}, 400)
        if _b64url_sha256(form.get("code_verifier", "")) != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE verifier mismatch"}, 400)
        return JSONResponse({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 3600,
                             "id_token": self._id_token(grant["nonce"])})

    def _id_token(self, nonce: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": self.user.sub, "aud": self.client_id, "iat": now,
                                  "exp": now + 300, "nonce": nonce, "email": self.user.email,
                                  "email_verified": self.user.email_verified}
        claims.update(self._overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        key: Any = self._rogue or self._key
        if self._algorithm == "HS256":
            key = self.client_secret
        elif self._algorithm == "none":
            key = None
        algorithm, self._algorithm, self._overrides, self._rogue = self._algorithm, "RS256", {}, None
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": self.kid})
