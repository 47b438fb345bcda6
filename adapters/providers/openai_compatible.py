"""Direct calls to OpenAI-compatible upstreams (OpenAI, DeepSeek, Mistral, Llama hosts, vLLM, Ollama, llama.cpp).

These upstreams already speak the protocol our clients speak, so translation would be pure cost: the
request body goes through with only `model` replaced (and usage asked for on streams), the response
bytes come back untouched, and streamed chunks are relayed as the upstream framed them. One shared
httpx.AsyncClient per event loop keeps connections alive across requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from application.providers import Answer, Chunk, Provider, UpstreamCall, UpstreamFailure, UpstreamStream
from domain.deployments import BROKEN_RESPONSE, PROVIDERS, TIMEOUT, UNREACHABLE, classify_status

_MAX_ERROR_DETAIL = 300


def _headers(call: UpstreamCall) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if call.route.api_key:
        headers["authorization"] = f"Bearer {call.route.api_key}"
    return headers


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the backoff rule decides instead


def _failure(response: httpx.Response, raw: bytes) -> UpstreamFailure:
    detail = raw[:_MAX_ERROR_DETAIL].decode(errors="replace")
    try:
        error = orjson.loads(raw).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            detail = error["message"][:_MAX_ERROR_DETAIL]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return UpstreamFailure(classify_status(response.status_code), f"upstream answered {response.status_code}: {detail}",
                           response.status_code, _retry_after(response))


def _transport_failure(exc: Exception) -> UpstreamFailure:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamFailure(TIMEOUT, f"upstream timed out ({type(exc).__name__})")
    return UpstreamFailure(UNREACHABLE, f"upstream unreachable ({type(exc).__name__})")


class OpenAICompatibleProvider(Provider):
    def __init__(self, *, max_connections: int = 1000, max_keepalive: int = 200) -> None:
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive)
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        # Created in the loop that uses it, on first use: nothing connects at import or bootstrap time.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = httpx.AsyncClient(limits=self._limits, timeout=None, trust_env=False)
        return client

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    async def _post(self, call: UpstreamCall, path: str, body: dict[str, Any]) -> Answer:
        url = call.route.deployment.base_url + path
        try:
            response = await self._client().post(url, content=orjson.dumps(body), headers=_headers(call),
                                                  timeout=call.timeout_s)
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from None
        raw = response.content
        if response.status_code >= 400:
            raise _failure(response, raw)
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(BROKEN_RESPONSE, "upstream answered with something that is not JSON") from None
        if not isinstance(obj, dict):
            raise UpstreamFailure(BROKEN_RESPONSE, "upstream answered with JSON that is not an object")
        return Answer(raw, obj)

    async def complete(self, call: UpstreamCall) -> Answer:
        answer = await self._post(call, "/chat/completions", {**call.body, "model": call.route.deployment.model})
        if not isinstance(answer.obj.get("choices"), list):
            raise UpstreamFailure(BROKEN_RESPONSE, "upstream answer has no choices")
        return answer

    async def embed(self, call: UpstreamCall) -> Answer:
        answer = await self._post(call, "/embeddings", {**call.body, "model": call.route.deployment.model})
        if not isinstance(answer.obj.get("data"), list):
            raise UpstreamFailure(BROKEN_RESPONSE, "upstream embeddings answer has no data")
        return answer

    async def open_stream(self, call: UpstreamCall) -> UpstreamStream:
        deployment = call.route.deployment
        body = {**call.body, "model": deployment.model, "stream": True}
        if PROVIDERS[deployment.provider].stream_usage_option:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        client = self._client()
        request = client.build_request("POST", deployment.base_url + "/chat/completions", content=orjson.dumps(body),
                                       headers={**_headers(call), "accept": "text/event-stream"},
                                       timeout=call.timeout_s)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from None
        if response.status_code >= 400:
            try:
                raw = await response.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await response.aclose()
            raise _failure(response, raw)
        return _SSEStream(response)


class _SSEStream(UpstreamStream):
    """Splits the upstream's SSE bytes into data payloads; `data: [DONE]` or a clean close ends it."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._bytes = response.aiter_raw()
        self._buffer = b""
        self._done = False

    async def next(self) -> Chunk | None:
        while not self._done:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                try:
                    more = await self._bytes.__anext__()
                except StopAsyncIteration:
                    self._done = True
                    break
                except httpx.HTTPError as exc:
                    self._done = True
                    kind = TIMEOUT if isinstance(exc, httpx.TimeoutException) else BROKEN_RESPONSE
                    raise UpstreamFailure(kind, f"upstream stream broke ({type(exc).__name__})") from None
                self._buffer += more
                continue
            line = self._buffer[:newline].rstrip(b"\r")
            self._buffer = self._buffer[newline + 1:]
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, `event:` names (unused by chat completions)
            data = line[5:].strip()
            if data == b"[DONE]":
                self._done = True
                break
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamFailure(BROKEN_RESPONSE, "upstream streamed a chunk that is not JSON") from None
            if isinstance(obj, dict) and "error" in obj and "choices" not in obj:
                raise UpstreamFailure(BROKEN_RESPONSE, f"upstream streamed an error: {str(obj['error'])[:200]}")
            return Chunk(data, obj)
        return None

    async def aclose(self) -> None:
        await self._response.aclose()
