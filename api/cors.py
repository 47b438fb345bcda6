"""CORS allow-list (NEXUS_CORS_ORIGINS): browsers on the listed origins may call the API with credentials.

Default: no origin at all, because the console is served by the API itself (same origin needs no CORS).
Starlette's middleware sends `Access-Control-Allow-Credentials: true` to every origin and lets the
missing Allow-Origin do the refusing; here an origin that is not listed gets no CORS header at all, so
no browser (however lenient) is ever told that credentials are welcome there.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Send

METHODS = ("GET", "POST", "DELETE", "OPTIONS")
HEADERS = ("authorization", "content-type", "idempotency-key", "x-request-id")
EXPOSED = ("retry-after", "nexus-receipt", "x-request-id")


class InvalidCorsOrigin(ValueError):
    def __init__(self, origin: str) -> None:
        super().__init__(f"NEXUS_CORS_ORIGINS: expected origins like https://app.example.com (scheme://host[:port], "
                         f"no path, no wildcard), got {origin!r}")


def parse_origins(text: str) -> list[str]:
    origins = [o.strip().rstrip("/") for o in (text or "").split(",") if o.strip()]
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if "*" in origin or scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise InvalidCorsOrigin(origin)
    return origins


class AllowListCors(CORSMiddleware):
    """Starlette's CORS, answering only listed origins (credentials included) and nothing to the rest."""

    def preflight_response(self, request_headers: Headers) -> Response:
        if not self.is_allowed_origin(request_headers["origin"]):
            return PlainTextResponse("Disallowed CORS origin", status_code=400, headers={"vary": "Origin"})
        return super().preflight_response(request_headers)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if message["type"] == "http.response.start" and origin is not None and not self.is_allowed_origin(origin):
            headers = MutableHeaders(scope=message)
            headers.add_vary_header("Origin")
            await send(message)
            return
        await super().send(message, send, request_headers)


def install_cors(app: Any, origins_text: str) -> None:
    """Wire NEXUS_CORS_ORIGINS onto the app (api/app.py calls this once, last, so it wraps everything)."""
    origins = parse_origins(origins_text)
    if origins:
        app.add_middleware(AllowListCors, allow_origins=origins, allow_credentials=True, allow_methods=METHODS,
                           allow_headers=HEADERS, expose_headers=EXPOSED, max_age=600)
