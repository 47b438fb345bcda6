"""A server-sent-events response that records its stream whatever happens to the client.

Starlette's StreamingResponse notices a departed client only at its next write, and leaves the body
iterator to the garbage collector; here the relay runs beside a watcher of `http.disconnect`, the
upstream is closed as soon as the client goes (the provider stops generating), and the stream is
recorded in every case (application.gateway.InferenceStream.finish runs once, as its own task).

Wire format after the last content chunk:
    data: {usage chunk + "nexus_receipt": {...}}     only if the client asked for usage
    data: [DONE]
    event: nexus.receipt                             after [DONE], where the openai SDK stops reading
    data: {"position": ..., "event_id": ..., "entry_hash": ..., "request_id": ...}
A stream the upstream broke ends with `data: {"error": {...}}` (the openai SDK raises it) instead of [DONE].
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.errors import error_body
from application.gateway import InferenceStream, receipt_fields

log = logging.getLogger(__name__)


class RecordedStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, stream: InferenceStream) -> None:
        self.stream = stream
        self.status_code = 200
        self.background = None
        request = stream.request
        self.init_headers({
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            "x-request-id": request.request_id,
            "nexus-receipt": f"status=pending; event_id={stream.completed_id}; request_id={request.request_id}",
        })

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay: asyncio.Task[None] | None = None
        watch: asyncio.Task[None] | None = None
        client_gone = True
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            relay = asyncio.ensure_future(self._relay(send))
            watch = asyncio.ensure_future(_disconnected(receive))
            await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
            client_gone = not relay.done() or relay.cancelled() or relay.exception() is not None
        finally:
            for task in (relay, watch):
                if task is not None and not task.done():
                    task.cancel()
            if relay is not None:
                await asyncio.wait({relay})  # its `finally` closes the upstream before we record
                if not relay.cancelled() and relay.exception() is not None:
                    log.debug("stream %s: relay ended with %r", self.stream.request.request_id, relay.exception())
            await self.stream.finish(client_gone)

    async def _relay(self, send: Send) -> None:
        chunks = self.stream.chunks()
        try:
            async for data in chunks:
                await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
        finally:
            await chunks.aclose()
        receipt = await self.stream.finish()
        tail: list[bytes] = []
        if receipt is not None:
            tail += [b"data: " + chunk + b"\n\n" for chunk in self.stream.final_chunks(receipt)]
        if self.stream.broken is not None:
            tail.append(b"data: " + orjson.dumps(error_body(
                f"the upstream stream broke: {self.stream.broken.detail}", "api_error", "upstream_stream_broken")) + b"\n\n")
        else:
            tail.append(b"data: [DONE]\n\n")
        if receipt is not None:
            fields = {**receipt_fields(receipt), "request_id": self.stream.request.request_id}
            tail.append(b"event: nexus.receipt\ndata: " + orjson.dumps(fields) + b"\n\n")
        else:
            tail.append(b"event: nexus.error\ndata: " + orjson.dumps(error_body(
                "the ledger could not record this stream", "api_error", "ledger_unavailable")) + b"\n\n")
        await send({"type": "http.response.body", "body": b"".join(tail), "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
