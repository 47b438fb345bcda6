"""Request rate limits per API key and per signed-in user: token buckets in front of /v1 and /graphql.

Who is limited is read from the credential alone, before any database read: an API key by the SHA-256
of the whole presented token (so nobody who lacks the secret can drain a real key's bucket by sending
its key id), a user by the `sub` of a correctly signed access token (so every session of that user
shares one bucket). A request without credentials is not limited here: it is refused with 401 anyway.
/v1/auth has its own limiter per email and address (application/sessions.py).

Buckets live in this process (application/token_bucket.py): no round trip on the gateway's hot path.
With change notices on, the API processes tell each other what they spent every tenth of a second
(application/shared_budget.py), so a limit holds across them; docs/auth.md says how closely.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.background import run_while_serving
from api.errors import error_body
from application.credentials import still_stands
from application.ports import SpendingExchange
from application.shared_budget import SharedBuckets
from application.token_bucket import TokenBucket
from domain.identity import parse_api_key


def _bucket(per_minute: float, burst: int) -> TokenBucket | None:
    return TokenBucket(capacity=burst, per_s=per_minute / 60) if per_minute > 0 else None


class RateLimits:
    """Which bucket a request draws from, and whether it may go on."""

    def __init__(self, *, key_per_minute: float, key_burst: int, user_per_minute: float, user_burst: int,
                 sessions: Any = None, access_cookie: str = "nexus_access", identity: Any = None) -> None:
        self.keys = _bucket(key_per_minute, key_burst)
        self.users = _bucket(user_per_minute, user_burst)
        self._sessions = sessions  # application.sessions.SessionService: checks an access token's signature
        self._identity = identity  # application.identity.IdentityService: API keys (websocket re-checks)
        self.access_cookie = access_cookie

    def wait(self, headers: Headers) -> tuple[str, float]:
        """(what was limited, seconds to wait); 0 seconds when the request may go on."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = token.strip()
        else:  # the console's HTTP-only access cookie (GraphQL reads it too)
            token = _cookie(headers.get("cookie", ""), self.access_cookie) or ""
        return self.wait_token(token)

    def wait_token(self, token: str, *, expired_too: bool = False) -> tuple[str, float]:
        """The same for a credential already taken out of the request (a websocket's connection_init; there an
        access token that expired since the socket was authenticated still names whose bucket it is)."""
        if token.startswith("nx_") and self.keys is not None:
            if parse_api_key(token) is None:  # refused (401) without a database read: nothing to protect, and
                return "", 0.0  # a bucket each would let a free spray evict real keys' spent buckets
            return "API key", self.keys.take(hashlib.sha256(token.encode()).hexdigest())
        if token.count(".") == 2 and self.users is not None and self._sessions is not None:
            subject = self._sessions.subject_of(token, expired_too=expired_too)
            if subject is not None:
                return "user", self.users.take(subject)
        return "", 0.0

    def websocket_token(self, headers: Headers, init_payload: Any) -> str:
        """The credential GraphQL's context reads on a websocket (api/graphql/context.py, same order): the
        handshake's Authorization header, else connection_init's, else the access cookie."""
        header = headers.get("authorization", "")
        if not header and isinstance(init_payload, dict):
            header = str(init_payload.get("Authorization") or init_payload.get("authorization") or "")
        if not header:
            return _cookie(headers.get("cookie", ""), self.access_cookie) or ""
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def still_authenticates(self, token: str) -> bool:
        """Whether a websocket's credential still stands (application/credentials.py)."""
        return still_stands(token, identity=self._identity, sessions=self._sessions)

    @property
    def enabled(self) -> bool:
        return self.keys is not None or self.users is not None


def limited_path(path: str) -> bool:
    return path == "/graphql" or (path.startswith("/v1/") and not path.startswith("/v1/auth/"))


def refusal(path: str, who: str, wait_s: float) -> Response:
    """429 with Retry-After: the OpenAI error format on /v1, a typed GraphQL error on /graphql."""
    retry_after = max(1, math.ceil(wait_s))
    message = f"rate limit exceeded for this {who}; retry in {retry_after} s"
    if path == "/graphql":
        body: dict[str, Any] = {"data": None, "errors": [
            {"message": message, "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after}}]}
    else:
        body = error_body(message, "rate_limit_error", "rate_limit_exceeded")
    return Response(orjson.dumps(body), status_code=429, media_type="application/json",
                    headers={"retry-after": str(retry_after)})


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and limited_path(scope["path"]):
            who, wait_s = self.limits.wait(Headers(scope=scope))
            if wait_s > 0:
                await refusal(scope["path"], who, wait_s)(scope, receive, send)
                return
        elif scope["type"] == "websocket" and scope["path"] == "/graphql":
            receive = _CountedOperations(self.limits, Headers(scope=scope), receive, send)
        await self.app(scope, receive, send)


class _CountedOperations:
    """A GraphQL websocket's `receive`: every operation started on it (`subscribe`, legacy `start`) is
    treated like an HTTP request, which GraphQL's context cannot do (it authenticates once per connection
    and keeps that actor for the connection's lifetime):
    - its credential is checked again, so a session signed out, a user deactivated or a key revoked
      while the socket is open runs nothing more (UNAUTHENTICATED);
    - it draws from the caller's bucket (a long-lived connection is not a request rate, but each operation
      is; graphql-transport-ws runs queries and mutations too, not only subscriptions) (RATE_LIMITED).
    A refused operation is answered with an error for its id and never reaches GraphQL; the connection
    stays open. Subscriptions already running re-check the same credential themselves (api/graphql/recheck.py)."""

    def __init__(self, limits: RateLimits, headers: Headers, receive: Receive, send: Send) -> None:
        self._limits, self._headers, self._receive, self._send = limits, headers, receive, send
        self._token = limits.websocket_token(headers, None)

    async def __call__(self) -> Message:
        while True:
            message = await self._receive()
            if message["type"] != "websocket.receive":
                return message
            try:
                frame = orjson.loads(message.get("text") or message.get("bytes") or b"")
            except orjson.JSONDecodeError:
                return message  # GraphQL answers a malformed frame itself
            kind = frame.get("type") if isinstance(frame, dict) else None
            if kind == "connection_init":
                self._token = self._limits.websocket_token(self._headers, frame.get("payload"))
            elif kind in ("subscribe", "start"):
                if not await asyncio.to_thread(self._limits.still_authenticates, self._token):
                    await self._send({"type": "websocket.send", "text": _ws_refusal(frame, {
                        "message": "expired, signed-out or revoked credentials: connect again after signing in",
                        "extensions": {"code": "UNAUTHENTICATED"}})})
                    continue
                who, wait_s = self._limits.wait_token(self._token, expired_too=True)
                if wait_s > 0:
                    retry_after = max(1, math.ceil(wait_s))
                    await self._send({"type": "websocket.send", "text": _ws_refusal(frame, {
                        "message": f"rate limit exceeded for this {who}; retry in {retry_after} s",
                        "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after}})})
                    continue
            return message


def _ws_refusal(frame: dict[str, Any], error: dict[str, Any]) -> str:
    # graphql-transport-ws: the payload of `error` is a list of errors; legacy graphql-ws: one error
    payload: Any = [error] if frame.get("type") == "subscribe" else error
    return orjson.dumps({"type": "error", "id": frame.get("id"), "payload": payload}).decode()


def _cookie(header: str, name: str) -> str | None:
    """Starlette's own parsing (the last duplicate wins, quotes removed), exactly what GraphQL and the routes
    read through `request.cookies`: a hand-rolled parser that took the first duplicate let a user send
    `c=junk; c=<jwt>` and be authenticated without ever being counted."""
    return cookie_parser(header).get(name)


def install_rate_limits(app: Any, container: Any) -> None:
    """Wire the NEXUS_RATE_LIMIT_* settings onto the app (api/app.py calls this once)."""
    from api.auth.settings import AuthSettings

    s = container.settings
    limits = RateLimits(key_per_minute=s.rate_limit_key_per_minute, key_burst=s.rate_limit_key_burst,
                        user_per_minute=s.rate_limit_user_per_minute, user_burst=s.rate_limit_user_burst,
                        sessions=container.sessions, access_cookie=AuthSettings().access_cookie,
                        identity=container.identity)
    app.state.rate_limits = limits
    # installed even with both limits off: it also re-checks every GraphQL websocket operation's credential
    app.add_middleware(RateLimitMiddleware, limits=limits)
    limiter = getattr(container.sessions, "limiter", None)  # sign-in attempts (application/sessions.py)
    exchange = container.spending_exchange
    if exchange is not None:
        share_spending(app, exchange, SharedBuckets({"keys": limits.keys, "users": limits.users, "sign_in": limiter},
                                                    container.bucket_id_secret))


def share_spending(app: Any, exchange: SpendingExchange, buckets: SharedBuckets) -> None:
    """Run the spending exchange for as long as the app serves (application/shared_budget.py)."""
    if buckets:
        app.state.shared_buckets = buckets
        run_while_serving(app, "the rate-limit spending exchange", lambda stop: exchange.run(buckets, stop))
