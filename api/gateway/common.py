"""What the gateway routes share: reading the body, building the request, receipts and errors as HTTP."""

from __future__ import annotations

import asyncio
import functools
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from api.deps import current_principal
from api.errors import ApiError, error_body, forbidden, unauthorized
from application.gateway import GatewayError, InferenceRequest, KeyCheck
from domain.identity import Principal, api_key_stream
from domain.ledger import Receipt
from domain.sealing import InvalidSubjectId, validate_subject_id


def _scoped(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """api.deps.require_scope in one worker-thread hop: its two sync dependencies cost FastAPI two."""

    async def principal(request: Request) -> Principal:
        found = await asyncio.to_thread(_caller, request)
        if not found.has(scope):
            raise forbidden(scope)
        return found

    return principal


def _caller(request: Request) -> Principal:
    """An API key, or a console user's access JWT (docs/auth.md) standing as `user:<id>` with scopes from its
    current roles: `inference` for inference.run, `read` for ledger.read. Bearer only: no cookie, no CSRF."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    sessions = request.app.state.container.sessions
    if scheme.lower() == "bearer" and token.count(".") == 2 and sessions is not None:
        actor = sessions.authenticate(token.strip())
        if actor is None:
            raise unauthorized("expired or revoked session: sign in again")
        granted = (("inference", "inference.run"), ("read", "ledger.read"))
        return Principal(actor.tenant_id, actor.subject, frozenset(s for s, p in granted if actor.can(p)))
    return current_principal(request)


def _confirmed_later(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """`_scoped`, except that an API key this process authenticated lately goes ahead at once, unread, with
    a `KeyCheck` as `request.state.key_check`: the gateway confirms it before it hands out an answer, by
    the condition of its append or by the read (application/gateway.py, KeyCheck)."""
    strict = _scoped(scope)

    async def principal(request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token.count(".") != 2:  # not a console user's JWT
            identity = request.app.state.container.identity
            known = identity.recently_authenticated(token)
            if known is not None and known[0].has(scope):
                principal, version = known
                request.state.key_check = KeyCheck(
                    api_key_stream(principal.key_id), version,
                    functools.partial(identity.confirm_async, token, principal.tenant_id, scope))
                return principal
        return await strict(request)

    return principal


async def still_authorized(request: Request) -> bool:
    """False if the key went ahead unread (`_confirmed_later`) and its read finds it revoked."""
    check: KeyCheck | None = getattr(request.state, "key_check", None)
    return check is None or await check.start_reading() is not None


InferencePrincipal = Annotated[Principal, Depends(_scoped("inference"))]
ReaderPrincipal = Annotated[Principal, Depends(_scoped("read"))]
# chat completions and embeddings (plain Starlette endpoints, called directly): the gateway confirms the
# key before any answer leaves
confirmed_later_inference_principal = _confirmed_later("inference")

TIMEOUT_HEADER = "nexus-timeout"  # seconds; the body field `timeout` wins over it
CORRELATION_HEADER = "x-nexus-correlation-id"
CAUSATION_HEADER = "x-nexus-causation-id"
_MAX_ID = 200


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return body


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: a model name is required", "model")
    return model


def _timeout(request: Request, body: dict[str, Any], default_s: float, max_s: float) -> float:
    raw: Any = body.pop("timeout", None)
    if raw is None:
        raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return default_s
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (0 < value <= max_s):
        raise bad_request(f"timeout: expected seconds in (0, {max_s:g}], got {raw!r}", "timeout")
    return value


def _identifier(request: Request, header: str, default: str) -> str:
    value = request.headers.get(header)
    if value is None:
        return default
    if not 0 < len(value) <= _MAX_ID:
        raise bad_request(f"{header}: expected 1-{_MAX_ID} characters", header)
    return value


def inference_request(request: Request, principal: Principal, kind: str, body: dict[str, Any], *,
                      stream: bool = False, include_usage: bool = False) -> InferenceRequest:
    gateway = request.app.state.container.gateway
    model = require_model(body)
    timeout_s = _timeout(request, body, gateway.config.default_timeout_s, gateway.config.max_timeout_s)
    user = body.get("user")
    subject = principal.key_id
    if user is not None:
        try:
            subject = validate_subject_id(user)
        except InvalidSubjectId as exc:
            raise bad_request(f"user: {exc} (it names a data subject in the ledger: use an opaque id)", "user") from None
    request_id = str(uuid.uuid4())
    return InferenceRequest(
        tenant_id=principal.tenant_id, key_id=principal.key_id, kind=kind, model=model, body=body, stream=stream,
        include_usage=include_usage, timeout_s=timeout_s, subject_id=subject, request_id=request_id,
        correlation_id=_identifier(request, CORRELATION_HEADER, request_id),
        causation_id=_identifier(request, CAUSATION_HEADER, request_id),
        key_check=getattr(request.state, "key_check", None),
    )


def receipt_header(receipt: Receipt) -> str:
    return f"position={receipt.position}; event_id={receipt.event_id}; entry_hash={receipt.entry_hash.hex()}"


def receipt_headers(receipt: Receipt | None, inference: InferenceRequest) -> dict[str, str]:
    headers = {"x-request-id": inference.request_id}
    if receipt is not None:
        headers["nexus-receipt"] = receipt_header(receipt)
    return headers


async def refused(request: Request, error: ApiError | GatewayError,
                  inference: InferenceRequest | None = None) -> JSONResponse:
    """A refusal, unless the key turns out revoked (`still_authorized`): then 401, and no more is said."""
    if not await still_authorized(request):
        raise unauthorized() from None
    if isinstance(error, ApiError):
        raise error
    return gateway_error(error, inference)


def gateway_error(exc: GatewayError, inference: InferenceRequest | None) -> JSONResponse:
    headers = receipt_headers(exc.receipt, inference) if inference is not None else None
    return JSONResponse(error_body(exc.message, exc.type, exc.code), status_code=exc.status, headers=headers)
