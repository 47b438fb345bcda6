"""POST /v1/chat/completions: whole, or streamed as server-sent events."""

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
from api.gateway.sse import RecordedStreamResponse
from application.gateway import GatewayError


async def chat_completions(request: Request) -> Response:
    principal = await confirmed_later_inference_principal(request)
    try:
        body = await read_json(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise bad_request("messages: a non-empty list of message objects is required", "messages")
        stream = body.get("stream") is True
        include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        inference = inference_request(request, principal, "chat", body, stream=stream, include_usage=include_usage)
    except ApiError as exc:
        return await refused(request, exc)
    gateway = request.app.state.container.gateway
    try:
        if not stream:
            done = await gateway.complete(inference)
            return Response(done.answer.data, media_type="application/json",
                            headers=receipt_headers(done.receipt, inference))
        live = await gateway.open_stream(inference)
    except GatewayError as exc:
        return await refused(request, exc, inference)
    return RecordedStreamResponse(live)


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
