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


async def create_embeddings(request: Request) -> Response:
    principal = await confirmed_later_inference_principal(request)
    try:
        body = await read_json(request)
        if body.get("input") in (None, "", []):
            raise bad_request("input: text, or a list of texts or token arrays, is required", "input")
        inference = inference_request(request, principal, "embeddings", body)
    except ApiError as exc:
        return await refused(request, exc)
    try:
        done = await request.app.state.container.gateway.complete(inference)
    except GatewayError as exc:
        return await refused(request, exc, inference)
    return Response(done.answer.data, media_type="application/json", headers=receipt_headers(done.receipt, inference))


routes = [Route("/v1/embeddings", create_embeddings, methods=["POST"])]
