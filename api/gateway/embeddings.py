"""POST /v1/embeddings."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import ApiError
from api.gateway.common import (
    bad_request,
    confirmed_later_inference_principal,
    inference_request,
    read_json,
    receipt_headers,
    refused,
)
from application.gateway import GatewayError


def _is_tokens(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                          for t in value)


def _check(body: dict) -> None:
    """OpenAI's shapes: `input` a text, a list of texts, a token array or a list of token arrays, none empty."""
    texts = body.get("input")
    if not (isinstance(texts, str) and texts or _is_tokens(texts) or isinstance(texts, list) and texts and (
            all(isinstance(t, str) and t for t in texts) or all(_is_tokens(t) for t in texts))):
        raise bad_request("input: a non-empty text, a list of texts, a token array or a list of token arrays is"
                          " required", "input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise bad_request("encoding_format: 'float' or 'base64'", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and not (isinstance(dimensions, int) and not isinstance(dimensions, bool)
                                       and dimensions > 0):
        raise bad_request("dimensions: a positive integer", "dimensions")


async def create_embeddings(request: Request) -> Response:
    principal = await confirmed_later_inference_principal(request)
    try:
        body = await read_json(request)
        _check(body)
        inference = inference_request(request, principal, "embeddings", body)
    except ApiError as exc:
        return await refused(request, exc)
    try:
        done = await request.app.state.container.gateway.complete(inference)
    except GatewayError as exc:
        return await refused(request, exc, inference)
    return Response(done.answer.data, media_type="application/json", headers=receipt_headers(done.receipt, inference))


routes = [Route("/v1/embeddings", create_embeddings, methods=["POST"])]
