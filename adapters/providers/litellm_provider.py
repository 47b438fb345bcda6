"""Anthropic Messages, Gemini (chat, and Gemini's batchEmbedContents) and AWS Bedrock (Converse for chat,
InvokeModel for embeddings) through litellm, which translates them to and from OpenAI's shapes (and signs
Bedrock's requests).

litellm costs milliseconds per call (docs/gateway.md), so it is used only where its translation earns
that: request and response formats that differ from OpenAI's. It is imported on first use (about 3 s)
with LITELLM_LOCAL_MODEL_COST_MAP=True, so it never reaches for the network; it never retries on its
own (the gateway's router does), and what it returns is reduced to plain OpenAI fields before a client
sees it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import threading
import weakref
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import orjson

from application.providers import Answer, Chunk, Provider, UpstreamCall, UpstreamFailure, UpstreamStream
from domain.deployments import BROKEN_RESPONSE, TIMEOUT, UNREACHABLE, aws_key_pair, classify_status

_PREFIX = {"anthropic": "anthropic", "gemini": "gemini", "bedrock": "bedrock/converse"}
_EMBEDDING_PREFIX = {"gemini": "gemini", "bedrock": "bedrock"}  # Bedrock's embedding models speak InvokeModel
# OpenAI request fields passed on to litellm; everything else in the body is dropped rather than
# guessed at (litellm refuses unknown fields for some providers).
_PASSED = ("tools", "tool_choice", "response_format", "temperature", "top_p", "max_tokens", "max_completion_tokens",
           "stop", "n", "seed", "parallel_tool_calls", "reasoning_effort", "presence_penalty", "frequency_penalty",
           "user", "logprobs", "top_logprobs")
_import_lock = threading.Lock()
_litellm: Any = None


def _lib() -> Any:
    global _litellm
    if _litellm is None:
        with _import_lock:
            if _litellm is None:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before the import, or it fetches
                import litellm

                litellm.suppress_debug_info = True
                litellm.telemetry = False
                litellm.drop_params = True  # a field the provider cannot take is dropped, not an error
                _litellm = litellm
    return _litellm


def _failure(exc: Exception) -> UpstreamFailure:
    lib = _lib()
    name = type(exc).__name__
    if isinstance(exc, lib.Timeout) or "Timeout" in name:
        return UpstreamFailure(TIMEOUT, f"upstream timed out ({name})")
    response = getattr(exc, "response", None)
    # The upstream's own status: litellm raises Anthropic's 529 (overloaded) as a 500 and keeps the 529
    # in provider_status_code only.
    status = getattr(exc, "provider_status_code", None)
    if not isinstance(status, int) or status < 400:
        status = getattr(response, "status_code", None)
    if not isinstance(status, int) or status < 400:
        status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", "") or exc)[:300]
    if isinstance(exc, lib.APIConnectionError) or not isinstance(status, int):
        return UpstreamFailure(UNREACHABLE, f"upstream unreachable or unreadable ({name}): {message}")
    retry_after = None
    headers = getattr(response, "headers", None) or {}
    try:
        retry_after = float(headers.get("retry-after")) if headers.get("retry-after") else None
    except (TypeError, ValueError):
        retry_after = None
    return UpstreamFailure(classify_status(status), f"upstream answered {status}: {message}", status, retry_after)


def _usage(u: dict[str, Any] | None) -> dict[str, Any] | None:
    if not u:
        return None
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"prompt_tokens": u.get("prompt_tokens") or 0, "completion_tokens": u.get("completion_tokens") or 0,
            "total_tokens": u.get("total_tokens") or 0, "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


def _tool_calls(calls: list[dict[str, Any]] | None, delta: bool) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out = []
    for i, c in enumerate(calls):
        function = c.get("function") or {}
        item: dict[str, Any] = {"id": c.get("id"), "type": c.get("type") or "function",
                                "function": {"name": function.get("name"), "arguments": function.get("arguments") or ""}}
        if delta:
            item = {"index": c.get("index", i), **{k: v for k, v in item.items() if v is not None}}
        out.append(item)
    return out


def _response(obj: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for i, c in enumerate(obj.get("choices") or []):
        m = c.get("message") or {}
        message: dict[str, Any] = {"role": m.get("role") or "assistant", "content": m.get("content")}
        calls = _tool_calls(m.get("tool_calls"), delta=False)
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": c.get("index", i), "message": message, "logprobs": None,
                        "finish_reason": c.get("finish_reason")})
    return {"id": obj.get("id"), "object": "chat.completion", "created": obj.get("created"), "model": obj.get("model"),
            "choices": choices, "usage": _usage(obj.get("usage"))}


def _chunk(obj: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for i, c in enumerate(obj.get("choices") or []):
        d = c.get("delta") or {}
        delta: dict[str, Any] = {k: d[k] for k in ("role", "content") if d.get(k) is not None}
        calls = _tool_calls(d.get("tool_calls"), delta=True)
        if calls:
            delta["tool_calls"] = calls
        choices.append({"index": c.get("index", i), "delta": delta, "logprobs": None,
                        "finish_reason": c.get("finish_reason")})
    chunk: dict[str, Any] = {"id": obj.get("id"), "object": "chat.completion.chunk", "created": obj.get("created"),
                             "model": obj.get("model"), "choices": choices}
    usage = _usage(obj.get("usage"))
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _reports_usage(provider: str, model: str) -> bool:
    """Whether litellm's embedding usage for this model is the provider's own count: Amazon Titan answers each
    text with its `inputTextTokenCount`, which litellm sums. Gemini and Cohere on Bedrock report none in the
    body, and litellm's usage is then its own guess, indistinguishable from a real count."""
    return provider == "bedrock" and model.startswith("amazon.titan-embed")


# Bedrock's InvokeModel answers every call with the input tokens it bills, in a header that litellm reads
# only for Cohere's image embeddings: Cohere's text embeddings carry no count in the body. The header is
# noted by a response hook on the HTTP client litellm is handed for Bedrock's embeddings, into the list
# that the calling task's context holds (litellm sends one InvokeModel per Titan text, one per Cohere batch).
_BILLED_INPUT_HEADER = "x-amzn-bedrock-input-token-count"
_billed_inputs: ContextVar[list[int | None] | None] = ContextVar("bedrock_billed_inputs", default=None)


async def _note_billed_input(response: Any) -> None:
    noted = _billed_inputs.get()
    if noted is not None:
        count = response.headers.get(_BILLED_INPUT_HEADER, "")
        noted.append(int(count) if count.isdigit() else None)


def _billed_total(noted: list[int | None]) -> int | None:
    """The input tokens billed over a call's InvokeModels, if every one of them said."""
    counts = [count for count in noted if count is not None]
    return sum(counts) if counts and len(counts) == len(noted) else None


def _embeddings(obj: dict[str, Any], model: str, encoding_format: object, reported: bool,
                billed: int | None = None) -> dict[str, Any]:
    """litellm's embeddings answer in OpenAI's shape, base64 if asked (as OpenAI's SDKs ask by default: little-
    endian float32). Usage is kept only where the provider reported it (`billed` in Bedrock's headers, or in
    the body where `reported`); otherwise it is left out and the gateway counts (and records the count as an
    estimate)."""
    data = []
    for i, item in enumerate(obj.get("data") or []):
        vector = [float(x) for x in item.get("embedding") or []]
        embedding: Any = vector
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": item.get("index", i), "embedding": embedding})
    if not data:
        raise UpstreamFailure(BROKEN_RESPONSE, "upstream embeddings answer has no data")
    answer: dict[str, Any] = {"object": "list", "data": data, "model": model}
    prompt_tokens = billed if billed is not None else (obj.get("usage") or {}).get("prompt_tokens")
    if (reported or billed is not None) and isinstance(prompt_tokens, int) and prompt_tokens >= 0:
        answer["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return answer


def _credentials(provider: str, region: str, credential: str | None) -> dict[str, Any]:
    """litellm's credential arguments for one call: always the deployment's own, never the host's."""
    if provider != "bedrock":
        return {"api_key": credential or "none"}
    pair = aws_key_pair(credential or "")
    if pair is None:  # a Bedrock API key, sent as a bearer token (deployments refuse a bedrock one without any)
        return {"api_key": credential or "none", "aws_region_name": region}
    key_id, secret, session_token = pair
    # An empty api_key (not None) makes litellm sign with these keys, not with AWS_BEARER_TOKEN_BEDROCK
    # from the host's environment, which it would otherwise prefer.
    return {"api_key": "", "aws_access_key_id": key_id, "aws_secret_access_key": secret,
            "aws_session_token": session_token, "aws_region_name": region}


class LitellmProvider(Provider):
    def __init__(self) -> None:
        # litellm's HTTP client for Bedrock's embeddings, one per event loop (its connections belong to the
        # loop), closed with the provider
        self._bedrock_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _bedrock_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._bedrock_clients.get(loop)
        if client is None:
            from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

            client = self._bedrock_clients[loop] = AsyncHTTPHandler(event_hooks={"response": [_note_billed_input]})
        return client

    async def aclose(self) -> None:
        client = self._bedrock_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def _kwargs(self, call: UpstreamCall) -> dict[str, Any]:
        d = call.route.deployment
        body = call.body
        kwargs: dict[str, Any] = {k: body[k] for k in _PASSED if k in body}
        kwargs.update(model=f"{_PREFIX[d.provider]}/{d.model}", messages=body.get("messages") or [],
                      api_base=d.base_url, timeout=call.timeout_s, num_retries=0, max_retries=0,
                      **_credentials(d.provider, d.region, call.route.api_key))
        return kwargs

    async def complete(self, call: UpstreamCall) -> Answer:
        lib = _lib()
        try:
            response = await lib.acompletion(**self._kwargs(call))
        except Exception as exc:  # litellm's exception hierarchy is mapped in one place
            raise _failure(exc) from None
        obj = _response(response.model_dump())
        return Answer(orjson.dumps(obj), obj)

    async def open_stream(self, call: UpstreamCall) -> UpstreamStream:
        lib = _lib()
        try:
            wrapper = await lib.acompletion(**self._kwargs(call), stream=True, stream_options={"include_usage": True})
        except Exception as exc:
            raise _failure(exc) from None
        return _LitellmStream(wrapper)

    async def embed(self, call: UpstreamCall) -> Answer:
        d = call.route.deployment  # the gateway routes here only text, for a provider that embeds (ProviderSpec)
        texts = call.body.get("input")
        extra = {k: call.body[k] for k in ("dimensions", "user") if k in call.body}
        lib = _lib()
        noted: list[int | None] = []
        if d.provider == "bedrock":
            extra["client"] = self._bedrock_client()
        noting = _billed_inputs.set(noted)
        try:
            response = await lib.aembedding(model=f"{_EMBEDDING_PREFIX[d.provider]}/{d.model}", input=texts,
                                            api_base=d.base_url, timeout=call.timeout_s, num_retries=0,
                                            max_retries=0, **_credentials(d.provider, d.region, call.route.api_key),
                                            **extra)
        except Exception as exc:
            raise _failure(exc) from None
        finally:
            _billed_inputs.reset(noting)
        obj = _embeddings(response.model_dump(), d.model, call.body.get("encoding_format"),
                          _reports_usage(d.provider, d.model), _billed_total(noted))
        return Answer(orjson.dumps(obj), obj)


class _LitellmStream(UpstreamStream):
    def __init__(self, wrapper: Any) -> None:
        self._wrapper = wrapper
        self._iter: AsyncIterator[Any] = wrapper.__aiter__()

    async def next(self) -> Chunk | None:
        try:
            item = await self._iter.__anext__()
        except StopAsyncIteration:
            return None
        except Exception as exc:
            failure = _failure(exc)
            if failure.kind is UNREACHABLE:  # a broken stream once it started, not an unreachable host
                failure = UpstreamFailure(BROKEN_RESPONSE, failure.detail)
            raise failure from None
        obj = _chunk(item.model_dump())
        return Chunk(orjson.dumps(obj), obj)

    async def aclose(self) -> None:
        close = getattr(self._wrapper, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # closing a half-read litellm stream must never mask the request's outcome
                pass
