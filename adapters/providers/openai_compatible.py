"""Direct calls to OpenAI-compatible upstreams (OpenAI, Azure OpenAI, DeepSeek, Mistral, Llama hosts, vLLM,
Ollama, llama.cpp).

These upstreams already speak the protocol our clients speak, so translation would be pure cost: the
request body goes through with only `model` replaced (and usage asked for on streams), the response
bytes come back untouched, and streamed chunks are relayed as the upstream framed them. Per event
loop, one lean HTTP/1.1 client (adapters/providers/http1.py) carries whole requests and one aiohttp
session carries streams; both keep connections alive across requests. An Azure deployment whose credential
is a Microsoft Entra ID app registration (not an API key) sends a bearer token from adapters/providers/entra.py.

Why not httpx: measured here against a local upstream (docs/gateway.md), one httpx request cost
about 1.0 ms of CPU alone and 2.4 ms at 20 in flight (its pool checks every idle connection's socket
on every request), aiohttp's 0.2 ms. Why not aiohttp for whole requests too: 145 µs of CPU per call
against the lean client's 40 µs, on a path whose whole budget is 2 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import aiohttp
import orjson

from adapters.providers.entra import EntraTokens
from adapters.providers.http1 import CannotConnect, ConnectionLost, Http1Client, Http1Error, encode_headers
from application.providers import Answer, Chunk, Provider, UpstreamCall, UpstreamFailure, UpstreamStream
from domain.deployments import (
    BROKEN_RESPONSE,
    PROVIDERS,
    TIMEOUT,
    UNREACHABLE,
    EntraClient,
    classify_status,
    entra_client,
    is_entra_credential,
)

_MAX_ERROR_DETAIL = 300


def _headers(api_key: str | None, auth: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if api_key:
        if auth == "api-key":  # Azure OpenAI
            headers["api-key"] = api_key
        else:
            headers["authorization"] = f"Bearer {api_key}"
    return headers


@lru_cache(maxsize=1024)
def _header_lines(api_key: str | None, auth: str) -> bytes:
    """The whole-request headers for one credential, encoded once (checked for line breaks)."""
    return encode_headers(_headers(api_key, auth))


_entra_client = lru_cache(maxsize=256)(entra_client)  # read once per credential, not per call


def upstream_url(base_url: str, path: str) -> str:
    """`path` appended to the base URL's path; its query (Azure's api-version) stays at the end."""
    base, separator, query = base_url.partition("?")
    return base + path + separator + query


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the backoff rule decides instead


def _failure(status: int, headers: Mapping[str, str], raw: bytes) -> UpstreamFailure:
    detail = raw[:_MAX_ERROR_DETAIL].decode(errors="replace")
    try:
        error = orjson.loads(raw).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            detail = error["message"][:_MAX_ERROR_DETAIL]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return UpstreamFailure(classify_status(status), f"upstream answered {status}: {detail}", status,
                           _retry_after(headers))


def _transport_failure(exc: BaseException) -> UpstreamFailure:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamFailure(TIMEOUT, f"upstream timed out ({type(exc).__name__})")
    return UpstreamFailure(UNREACHABLE, f"upstream unreachable ({type(exc).__name__})")


_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _exchange_failure(exc: BaseException) -> UpstreamFailure:
    if isinstance(exc, TimeoutError):
        return UpstreamFailure(TIMEOUT, "upstream timed out")
    if isinstance(exc, CannotConnect | ConnectionLost):
        return UpstreamFailure(UNREACHABLE, f"upstream unreachable: {exc}")
    if isinstance(exc, ValueError):
        return UpstreamFailure(UNREACHABLE, f"upstream cannot be called: {exc}")
    return UpstreamFailure(BROKEN_RESPONSE, f"upstream answered with a broken response: {exc}")


class OpenAICompatibleProvider(Provider):
    def __init__(self, *, max_connections: int = 1000, entra: EntraTokens | None = None) -> None:
        self._max_connections = max_connections
        self._entra = entra or EntraTokens()
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._clients: dict[asyncio.AbstractEventLoop, Http1Client] = {}

    def _client(self) -> Http1Client:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = Http1Client(max_connections=self._max_connections)
        return client

    def _session(self) -> aiohttp.ClientSession:
        # Created in the loop that uses it, on first use: nothing connects at import or bootstrap time.
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, keepalive_timeout=30,
                                             ttl_dns_cache=300)
            session = self._sessions[loop] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
                skip_auto_headers=("User-Agent",))
        return session

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()

    async def _credential(self, call: UpstreamCall) -> tuple[str | None, str, EntraClient | None]:
        """(credential, how it is sent, the Entra app registration it came from): an Azure deployment's app
        registration is exchanged for a bearer token (held until it nearly expires)."""
        d = call.route.deployment
        spec = PROVIDERS[d.provider]
        key, auth = call.route.api_key, spec.auth
        entra = _entra_client(key) if spec.entra_sign_in and key else None
        if entra is None:
            if spec.entra_sign_in and is_entra_credential(key):  # never sent upstream as if it were an API key
                raise UpstreamFailure(classify_status(401), "the deployment's Entra ID credential cannot be read")
            return key, auth, None
        return await self._entra.bearer(entra, d.base_url, self._session(), call.timeout_s), "bearer", entra

    def _refused(self, status: int, entra: EntraClient | None) -> None:
        if status == 401 and entra is not None:
            self._entra.forget(entra)

    async def _post(self, call: UpstreamCall, path: str, body: dict[str, Any]) -> Answer:
        key, auth, entra = await self._credential(call)
        try:
            d = call.route.deployment
            response = await self._client().post(upstream_url(d.base_url, path), orjson.dumps(body),
                                                 _header_lines(key, auth), call.timeout_s)
        except (Http1Error, TimeoutError, ValueError) as exc:
            raise _exchange_failure(exc) from None
        raw = response.body
        if response.status >= 400:
            self._refused(response.status, entra)
            raise _failure(response.status, response.headers, raw)
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
        key, auth, entra = await self._credential(call)
        try:
            response = await self._session().post(
                upstream_url(deployment.base_url, "/chat/completions"), data=orjson.dumps(body),
                headers={**_headers(key, auth), "accept": "text/event-stream"},
                # the attempt's limit until the headers; the gateway bounds every later read itself
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=call.timeout_s))
        except _TRANSPORT_ERRORS as exc:
            raise _transport_failure(exc) from None
        if response.status >= 400:
            try:
                raw = await response.read()
            except _TRANSPORT_ERRORS:
                raw = b""
            finally:
                response.release()
            self._refused(response.status, entra)
            raise _failure(response.status, response.headers, raw)
        return _SSEStream(response)


class _SSEStream(UpstreamStream):
    """Reads the upstream's SSE lines into data payloads; `data: [DONE]` or a clean close ends it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._done = False

    async def next(self) -> Chunk | None:
        content = self._response.content
        while not self._done:
            try:
                line = await content.readline()
            except _TRANSPORT_ERRORS as exc:
                self._done = True
                kind = TIMEOUT if isinstance(exc, asyncio.TimeoutError) else BROKEN_RESPONSE
                raise UpstreamFailure(kind, f"upstream stream broke ({type(exc).__name__})") from None
            if not line:
                self._done = True
                break
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
        if self._done:
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            self._response.close()  # cut short: drop the connection, so the upstream stops generating
