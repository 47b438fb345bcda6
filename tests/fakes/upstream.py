"""Fake LLM upstreams speaking the real wire protocols, with scriptable failures.

One Starlette app serves any number of named upstreams: `/u/<name>/...` is upstream `<name>`, with its
own script of behaviours and its own log of the requests it received. Under each name it speaks:

    OpenAI     POST /v1/chat/completions (JSON, or SSE with the usage chunk when asked), POST /v1/embeddings
    Azure      the same under /openai/deployments/<deployment>/ (the query and headers are logged); a request
               with a bearer token instead of an api-key is refused (401) unless the fake Entra issued it
               and it has not expired
    Entra ID   POST /entra/<directory>/oauth2/v2.0/token: the client-credentials grant for one app
               registration (ENTRA_*), tokens that expire after `Upstreams.entra.expires_in` seconds
    Anthropic  POST /v1/messages (JSON, or its event stream: message_start, content_block_*, message_delta
               with usage, message_stop)
    Gemini     POST /v1beta/models/<model>:generateContent, :streamGenerateContent?alt=sse and
               :batchEmbedContents (no usage in its answer, as Gemini sends none)
    Bedrock    POST /model/<model id>/converse (JSON) and /converse-stream (AWS's binary event stream),
               /model/<model id>/invoke for embeddings (Amazon Titan: one text a call; Cohere: a batch),
               refusing with 403, as AWS does, a request that is neither signed with SigV4 for the
               BEDROCK_KEY_ID pair nor carries BEDROCK_API_KEY (each request's log says which, and its region)

Replies are deterministic so tests can state exact token counts: the reply is REPLY split into words
(one word = one token = one streamed chunk), prompt tokens are the words of every message.

Behaviours (`Script.then(...)`, consumed one per request, then `Script.default`):
    ok()            answer normally
    status(429)     answer with that HTTP status and the provider's error body (Retry-After optional)
    slow(seconds)   wait before answering
    cut(n)          stream n content chunks, then drop the connection
    drip(seconds)   stream with a pause before every chunk
    no_usage()      stream without any usage (OpenAI: no usage chunk even when asked)
    cache_and_reasoning(cached, reasoning, deepseek=False)
                    answer normally, and report that many cached prompt tokens and reasoning tokens in
                    the provider's own usage fields (OpenAI's details; DeepSeek's prompt_cache_hit_tokens;
                    Anthropic's cache_read_input_tokens, with input_tokens then the uncached rest;
                    Gemini's cachedContentTokenCount and thoughtsTokenCount, thoughts not in candidates)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.certificates import rsa_key, self_signed, thumbprint_s256

REPLY = "Hello from the fake upstream."
WORDS = [w if i == 0 else " " + w for i, w in enumerate(REPLY.split())]
JSON_REPLY = '{"answer": 42}'
TOOL_ARGUMENTS = {"city": "Paris"}


@dataclass(frozen=True)
class Behaviour:
    kind: str = "ok"
    status: int = 200
    delay_s: float = 0.0
    chunks: int = 0
    retry_after: str | None = None
    cached: int = 0  # prompt tokens served from the provider's cache (part of the prompt)
    reasoning: int = 0  # completion tokens spent thinking (OpenAI counts them in completion_tokens)
    deepseek: bool = False  # DeepSeek's usage fields instead of OpenAI's details


def ok() -> Behaviour:
    return Behaviour()


def status(code: int, retry_after: str | None = None) -> Behaviour:
    return Behaviour("status", status=code, retry_after=retry_after)


def slow(seconds: float) -> Behaviour:
    return Behaviour("slow", delay_s=seconds)


def cut(after_chunks: int) -> Behaviour:
    return Behaviour("cut", chunks=after_chunks)


def drip(seconds: float) -> Behaviour:
    return Behaviour("drip", delay_s=seconds)


def cache_and_reasoning(cached: int, reasoning: int, deepseek: bool = False) -> Behaviour:
    return Behaviour(cached=cached, reasoning=reasoning, deepseek=deepseek)


def no_usage() -> Behaviour:
    return Behaviour("no_usage")


@dataclass
class Script:
    default: Behaviour = field(default_factory=ok)
    queue: deque[Behaviour] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    on_request: Callable[[], None] | None = None  # called as each request arrives, before any answer

    def then(self, *behaviours: Behaviour) -> Script:
        self.queue.extend(behaviours)
        return self

    def next(self) -> Behaviour:
        try:
            return self.queue.popleft()
        except IndexError:
            return self.default


ENTRA_DIRECTORY = "contoso.onmicrosoft.com"
ENTRA_CLIENT_ID = "0f3a1c52-8d3e-4a7b-9c1d-2e5f6a7b8c9d"
ENTRA_SECRET = "fake~entra.client_secret-0000"
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
ENTRA_CERTIFICATE_KEY = rsa_key()  # the app registration's certificate credential (uploaded to Entra ID)
ENTRA_CERTIFICATE = self_signed(ENTRA_CERTIFICATE_KEY)


@dataclass
class EntraFake:
    """The fake Entra ID's state: what it issued, until when, and the token requests it answered."""

    expires_in: int = 3599
    delay_s: float = 0.0  # before each answer
    token_requests: list[dict[str, str]] = field(default_factory=list)
    issued: dict[str, float] = field(default_factory=dict)  # token -> time.monotonic() it expires at
    # the app registration's certificates by their x5t#S256 thumbprint, and the assertion ids it has seen
    certificates: dict[str, Any] = field(
        default_factory=lambda: {thumbprint_s256(ENTRA_CERTIFICATE): ENTRA_CERTIFICATE.public_key()})
    assertion_ids: set[str] = field(default_factory=set)

    def valid(self, token: str) -> bool:
        return time.monotonic() < self.issued.get(token, 0.0)


class Upstreams:
    """The scripts of every named upstream; the app below reads them from its server thread."""

    def __init__(self) -> None:
        self._scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self.url = ""  # set once the server runs
        self.entra = EntraFake()

    def script(self, name: str) -> Script:
        with self._lock:
            return self._scripts.setdefault(name, Script())

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.entra = EntraFake()

    def base(self, name: str, suffix: str = "/v1") -> str:
        return f"{self.url}/u/{name}{suffix}"


def _words(text: Any) -> int:
    if isinstance(text, str):
        return len(text.split())
    if isinstance(text, list):  # content parts
        return sum(_words(p.get("text", "")) for p in text if isinstance(p, dict))
    return 0


async def _begin(request: Request, upstreams: Upstreams) -> tuple[Script, Behaviour, dict[str, Any]]:
    script = upstreams.script(request.path_params["name"])
    body = orjson.loads(await request.body())
    script.requests.append({"path": request.url.path, "query": str(request.url.query),
                            "headers": dict(request.headers), "body": body})
    if script.on_request is not None:
        script.on_request()
    behaviour = script.next()
    if behaviour.kind == "slow":
        await asyncio.sleep(behaviour.delay_s)
    return script, behaviour, body


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"


async def _emit(frames: list[bytes], behaviour: Behaviour, content_frames: set[int]) -> AsyncIterator[bytes]:
    sent_content = 0
    for i, frame in enumerate(frames):
        if behaviour.kind == "drip":
            await asyncio.sleep(behaviour.delay_s)
        if behaviour.kind == "cut" and i in content_frames:
            if sent_content == behaviour.chunks:
                raise ConnectionAbortedError("scripted cut")  # uvicorn drops the connection mid-body
            sent_content += 1
        yield frame


def _stream(frames: list[bytes], behaviour: Behaviour, content_frames: set[int]) -> StreamingResponse:
    return StreamingResponse(_emit(frames, behaviour, content_frames), media_type="text/event-stream")


# --- OpenAI ------------------------------------------------------------------------------------------


def _openai_error(behaviour: Behaviour) -> Response:
    headers = {"retry-after": behaviour.retry_after} if behaviour.retry_after else None
    kind = "rate_limit_error" if behaviour.status == 429 else "server_error"
    return JSONResponse({"error": {"message": f"scripted {behaviour.status}", "type": kind, "param": None,
                                   "code": None}}, status_code=behaviour.status, headers=headers)


def _openai_message(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    tools = body.get("tools")
    if tools and body.get("tool_choice") != "none":
        call = {"id": "call_fake_1", "type": "function",
                "function": {"name": tools[0]["function"]["name"], "arguments": orjson.dumps(TOOL_ARGUMENTS).decode()}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    fmt = (body.get("response_format") or {}).get("type")
    text = JSON_REPLY if fmt in ("json_object", "json_schema") else REPLY
    return {"role": "assistant", "content": text}, "stop"


def _openai_usage(prompt: int, completion: int, behaviour: Behaviour | None = None) -> dict[str, Any]:
    """OpenAI's usage: the prompt includes the cached tokens, the completion the reasoning ones."""
    cached, reasoning = (behaviour.cached, behaviour.reasoning) if behaviour else (0, 0)
    completion += reasoning
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if behaviour is not None and behaviour.deepseek:  # https://api-docs.deepseek.com/api/create-chat-completion
        return {**usage, "prompt_cache_hit_tokens": cached, "prompt_cache_miss_tokens": prompt - cached,
                "completion_tokens_details": {"reasoning_tokens": reasoning}}
    return {**usage, "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


async def openai_chat(request: Request) -> Response:
    upstreams: Upstreams = request.app.state.upstreams
    _, behaviour, body = await _begin(request, upstreams)
    if behaviour.kind == "status":
        return _openai_error(behaviour)
    prompt = sum(_words(m.get("content")) for m in body.get("messages", []))
    message, finish = _openai_message(body)
    base = {"id": "chatcmpl-fake", "created": 1_700_000_000, "model": body["model"], "system_fingerprint": "fp_fake"}
    if not body.get("stream"):
        completion = len(WORDS) if message.get("content") == REPLY else 6
        return JSONResponse({**base, "object": "chat.completion",
                             "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                             "usage": _openai_usage(prompt, completion, behaviour)})
    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and behaviour.kind != "no_usage"
    chunk = {**base, "object": "chat.completion.chunk"}
    extra = {"usage": None} if include_usage else {}

    def frame(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return _sse({**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                           "finish_reason": finish_reason}], **extra})

    frames = [frame({"role": "assistant", "content": ""})]
    if "tool_calls" in message:
        call = message["tool_calls"][0]
        pieces = [{"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                   "function": {"name": call["function"]["name"], "arguments": ""}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}]
    else:
        text = message["content"]
        words = WORDS if text == REPLY else [text]
        pieces = [{"content": w} for w in words]
    frames += [frame(p) for p in pieces]
    content_frames = set(range(1, len(frames)))
    frames.append(frame({}, finish))
    if include_usage:
        frames.append(_sse({**chunk, "choices": [], "usage": _openai_usage(prompt, len(pieces), behaviour)}))
    frames.append(b"data: [DONE]\n\n")
    return _stream(frames, behaviour, content_frames)


async def openai_embeddings(request: Request) -> Response:
    upstreams: Upstreams = request.app.state.upstreams
    _, behaviour, body = await _begin(request, upstreams)
    if behaviour.kind == "status":
        return _openai_error(behaviour)
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = []
    for i, text in enumerate(inputs):
        vector = [float(len(str(text))), 0.5, -0.25, float(i)]
        if body.get("encoding_format") == "base64":
            encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        else:
            encoded = vector
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = sum(_words(t) if isinstance(t, str) else len(t) for t in inputs)
    return JSONResponse({"object": "list", "data": data, "model": body["model"],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# --- Anthropic Messages --------------------------------------------------------------------------------


async def anthropic_messages(request: Request) -> Response:
    upstreams: Upstreams = request.app.state.upstreams
    _, behaviour, body = await _begin(request, upstreams)
    if behaviour.kind == "status":
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(behaviour.status, "api_error")
        headers = {"retry-after": behaviour.retry_after} if behaviour.retry_after else None
        return JSONResponse({"type": "error", "error": {"type": kind, "message": f"scripted {behaviour.status}"}},
                            status_code=behaviour.status, headers=headers)
    prompt = _words(body.get("system")) + sum(_words(m.get("content")) for m in body.get("messages", []))
    tools = body.get("tools")
    message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"]}
    if not body.get("stream"):
        if tools:
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": "toolu_fake_1", "name": tools[0]["name"],
                                              "input": TOOL_ARGUMENTS}]
            stop, out = "tool_use", 6
        else:
            content, stop, out = [{"type": "text", "text": REPLY}], "end_turn", len(WORDS)
        usage = {"input_tokens": prompt - behaviour.cached, "output_tokens": out,
                 "cache_read_input_tokens": behaviour.cached, "cache_creation_input_tokens": 0}
        return JSONResponse({**message, "content": content, "stop_reason": stop, "stop_sequence": None,
                             "usage": usage})
    frames = [
        _sse({"type": "message_start", "message": {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                                                    "usage": {"input_tokens": prompt - behaviour.cached,
                                                              "cache_read_input_tokens": behaviour.cached,
                                                              "cache_creation_input_tokens": 0, "output_tokens": 1}}},
             "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    first = len(frames)
    frames += [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
                    "content_block_delta") for w in WORDS]
    content_frames = set(range(first, len(frames)))
    frames.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    if behaviour.kind != "no_usage":
        frames.append(_sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": len(WORDS)}}, "message_delta"))
    frames.append(_sse({"type": "message_stop"}, "message_stop"))
    return _stream(frames, behaviour, content_frames)


# --- Gemini ----------------------------------------------------------------------------------------------


async def gemini(request: Request) -> Response:
    upstreams: Upstreams = request.app.state.upstreams
    _, behaviour, body = await _begin(request, upstreams)
    model, _, method = request.path_params["rest"].partition(":")
    if behaviour.kind == "status":
        state = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(behaviour.status, "UNKNOWN")
        return JSONResponse({"error": {"code": behaviour.status, "message": f"scripted {behaviour.status}",
                                       "status": state}}, status_code=behaviour.status)
    if method == "batchEmbedContents":  # no usage in the answer: Gemini reports none for embeddings
        texts = [" ".join(p.get("text", "") for p in r["content"]["parts"]) for r in body["requests"]]
        size = body["requests"][0].get("outputDimensionality") or 4
        return JSONResponse({"embeddings": [{"values": ([float(len(t)), 0.5, -0.25, float(i)] * size)[:size]}
                                            for i, t in enumerate(texts)]})
    prompt = sum(_words(p.get("text", "")) for c in body.get("contents", []) for p in c.get("parts", []))
    prompt += sum(_words(p.get("text", "")) for p in (body.get("systemInstruction") or {}).get("parts", []))

    def usage(out: int) -> dict[str, Any]:  # thoughts are counted apart from the candidates
        found = {"promptTokenCount": prompt, "candidatesTokenCount": out,
                 "totalTokenCount": prompt + out + behaviour.reasoning}
        if behaviour.cached:
            found["cachedContentTokenCount"] = behaviour.cached
        if behaviour.reasoning:
            found["thoughtsTokenCount"] = behaviour.reasoning
        return found

    if method == "generateContent":
        return JSONResponse({"candidates": [{"content": {"role": "model", "parts": [{"text": REPLY}]},
                                             "finishReason": "STOP", "index": 0}],
                             "usageMetadata": usage(len(WORDS)), "modelVersion": model})
    frames = []
    for i, word in enumerate(WORDS):
        last = i == len(WORDS) - 1
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": word}]}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        frame: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
        if behaviour.kind != "no_usage":
            frame["usageMetadata"] = usage(i + 1)
        frames.append(_sse(frame))
    return _stream(frames, behaviour, set(range(len(frames))))


# --- Azure OpenAI with Microsoft Entra ID -------------------------------------------------------------------


async def entra_token(request: Request) -> Response:
    """https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow"""
    entra: EntraFake = request.app.state.upstreams.entra
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
    entra.token_requests.append({"directory": request.path_params["directory"], **form})
    await asyncio.sleep(entra.delay_s)
    if form.get("grant_type") != "client_credentials" or form.get("scope") != ENTRA_SCOPE:
        return JSONResponse({"error": "invalid_request", "error_description": "AADSTS900144: bad grant or scope"},
                            status_code=400)
    if "client_assertion" in form:
        refusal = _assertion_refusal(entra, form, str(request.url).split("?", 1)[0])
        if refusal is not None:
            return JSONResponse({"error": "invalid_client", "error_description": refusal}, status_code=401)
    if request.path_params["directory"] != ENTRA_DIRECTORY or form.get("client_id") != ENTRA_CLIENT_ID or (
            "client_assertion" not in form and form.get("client_secret") != ENTRA_SECRET):
        return JSONResponse({"error": "invalid_client",
                             "error_description": "AADSTS7000215: Invalid client secret provided."}, status_code=401)
    token = f"entra-token-{uuid.uuid4().hex}"
    entra.issued[token] = time.monotonic() + entra.expires_in
    return JSONResponse({"token_type": "Bearer", "expires_in": entra.expires_in, "ext_expires_in": entra.expires_in,
                         "access_token": token})


def _assertion_refusal(entra: EntraFake, form: dict[str, str], token_url: str) -> str | None:
    """Why Entra ID refuses a certificate's client assertion, or None: its type, header, signature, claims, replay."""
    if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" or (
            "client_secret" in form):
        return "AADSTS7000216: 'client_assertion_type' is required, and no client_secret with it"
    assertion = form["client_assertion"]
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return "AADSTS50027: JWT token is invalid or malformed."
    key = entra.certificates.get(header.get("x5t#S256", ""))
    if header.get("alg") != "PS256" or header.get("typ") != "JWT" or key is None:
        return "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered."
    try:
        claims = jwt.decode(assertion, key, algorithms=["PS256"], audience=token_url,
                            options={"require": ["aud", "iss", "sub", "jti", "exp", "nbf", "iat"]})
    except jwt.PyJWTError as exc:
        return f"AADSTS700027: Client assertion failed signature validation ({type(exc).__name__})."
    if claims["iss"] != form.get("client_id") or claims["sub"] != form.get("client_id"):
        return "AADSTS700023: Client assertion audience or issuer claim does not match the client."
    if claims["jti"] in entra.assertion_ids:
        return "AADSTS700025: Client assertion has already been used (its jti is replayed)."
    entra.assertion_ids.add(claims["jti"])
    return None


def _azure(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """An Azure OpenAI route: an api-key passes (as before), a bearer token only if Entra issued it and it holds."""
    async def endpoint(request: Request) -> Response:
        auth = request.headers.get("authorization")
        upstreams: Upstreams = request.app.state.upstreams
        if auth is not None and not upstreams.entra.valid(auth.removeprefix("Bearer ")):
            upstreams.script(request.path_params["name"]).requests.append(
                {"path": request.url.path, "headers": dict(request.headers), "refused": True})
            return JSONResponse({"error": {"code": "401", "message": "Unauthorized. Access token is missing, invalid,"
                                           " audience is incorrect, or have expired."}}, status_code=401)
        response: Response = await handler(request)
        return response
    return endpoint


# --- AWS Bedrock Converse --------------------------------------------------------------------------------
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html, its event stream framing
# https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html#streaming-event-stream and
# SigV4 https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html, checked here by hand (not
# with botocore, which signs on the client's side).

BEDROCK_KEY_ID = "AKIAFAKEBEDROCK00001"
BEDROCK_SECRET = "fake+bedrock/secret/access/key/00000000"
BEDROCK_API_KEY = "ABSKZmFrZUJlZHJvY2tBcGlLZXkwMDAw"
_SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=(\w+)/(\d{8})/([a-z0-9-]+)/bedrock/aws4_request, "
                    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})")


def _bedrock_caller(request: Request, body: bytes) -> tuple[str, str | None] | str:
    """("sigv4", region) or ("api_key", None) for a request AWS would accept; else why it would not."""
    auth = request.headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return ("api_key", None) if hmac.compare_digest(auth, f"Bearer {BEDROCK_API_KEY}") else "unknown API key"
    found = _SIGV4.fullmatch(auth)
    if found is None:
        return "not signed with SigV4"
    key_id, day, region, signed, signature = found.groups()
    names = signed.split(";")
    if key_id != BEDROCK_KEY_ID or "host" not in names or "x-amz-date" not in names:
        return "unknown access key, or host and date not signed"
    canonical = "\n".join((
        request.method, quote(request.scope["raw_path"].decode(), safe="/~"), request.scope["query_string"].decode(),
        "".join(f"{name}:{' '.join(request.headers.get(name, '').split())}\n" for name in names), signed,
        hashlib.sha256(body).hexdigest(),
    ))
    scope = f"{day}/{region}/bedrock/aws4_request"
    to_sign = "\n".join(("AWS4-HMAC-SHA256", request.headers["x-amz-date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()))
    key = f"AWS4{BEDROCK_SECRET}".encode()
    for part in (day, region, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return ("sigv4", region) if hmac.compare_digest(expected, signature) else "the signature does not match"


def _bedrock_error(status: int, kind: str, message: str) -> Response:
    return JSONResponse({"message": message}, status_code=status, headers={"x-amzn-ErrorType": f"{kind}:"})


def _event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """One message of AWS's event stream: prelude (lengths, CRC), string headers, JSON payload, CRC."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    data = orjson.dumps(payload)
    prelude = struct.pack(">II", 12 + len(headers) + len(data) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + data
    return message + struct.pack(">I", zlib.crc32(message))


async def _bedrock_begin(request: Request) -> tuple[Behaviour, dict[str, Any]] | Response:
    """The request logged with its caller, or AWS's answer: 403 to a bad signature, a scripted failure."""
    script, behaviour, body = await _begin(request, request.app.state.upstreams)
    caller = _bedrock_caller(request, await request.body())
    if isinstance(caller, str):
        return _bedrock_error(403, "InvalidSignatureException", caller)
    script.requests[-1].update(auth=caller[0], region=caller[1])
    if behaviour.kind == "status":
        kind = {429: "ThrottlingException", 503: "ServiceUnavailableException"}.get(behaviour.status,
                                                                                   "InternalServerException")
        return _bedrock_error(behaviour.status, kind, f"scripted {behaviour.status}")
    return behaviour, body


async def bedrock_converse(request: Request) -> Response:
    begun = await _bedrock_begin(request)
    if isinstance(begun, Response):
        return begun
    behaviour, body = begun
    prompt = sum(_words(c.get("text", "")) for m in body.get("messages", []) for c in m.get("content", []))
    prompt += sum(_words(c.get("text", "")) for c in body.get("system", []))

    def usage(out: int) -> dict[str, Any]:  # inputTokens leave the cache reads out, as Anthropic's do
        return {"inputTokens": prompt - behaviour.cached, "outputTokens": out,
                "totalTokens": prompt + out, "cacheReadInputTokens": behaviour.cached, "cacheWriteInputTokens": 0}

    tools = (body.get("toolConfig") or {}).get("tools")
    if not request.url.path.endswith("/converse-stream"):
        if tools:
            content: list[dict[str, Any]] = [{"toolUse": {"toolUseId": "tooluse_fake_1",
                                                          "name": tools[0]["toolSpec"]["name"], "input": TOOL_ARGUMENTS}}]
            stop, out = "tool_use", 6
        else:
            content, stop, out = [{"text": REPLY}], "end_turn", len(WORDS)
        return JSONResponse({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
                             "usage": usage(out), "metrics": {"latencyMs": 1}})
    frames = [_event_frame("messageStart", {"role": "assistant"})]
    if tools:  # a tool call streams as a block start naming the tool, then its JSON input in pieces
        arguments = orjson.dumps(TOOL_ARGUMENTS).decode()
        frames.append(_event_frame("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {
            "toolUseId": "tooluse_fake_1", "name": tools[0]["toolSpec"]["name"]}}}))
        pieces = [arguments[:5], arguments[5:]]
        frames += [_event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": p}}})
                   for p in pieces]
        stop, out = "tool_use", 6
    else:
        frames += [_event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}}) for w in WORDS]
        stop, out = "end_turn", len(WORDS)
    content_frames = set(range(1, len(frames)))
    frames += [_event_frame("contentBlockStop", {"contentBlockIndex": 0}),
               _event_frame("messageStop", {"stopReason": stop})]
    if behaviour.kind != "no_usage":
        frames.append(_event_frame("metadata", {"usage": usage(out), "metrics": {"latencyMs": 1}}))
    return StreamingResponse(_emit(frames, behaviour, content_frames), media_type="application/vnd.amazon.eventstream")


async def bedrock_invoke(request: Request) -> Response:
    """InvokeModel for embedding models: Titan's body and answer, or Cohere Embed's; with the input tokens
    billed in `X-Amzn-Bedrock-Input-Token-Count`, as Bedrock sends it (not with `no_usage()`)."""
    begun = await _bedrock_begin(request)
    if isinstance(begun, Response):
        return begun
    behaviour, body = begun
    if "inputText" in body:  # Amazon Titan Text Embeddings
        text = body["inputText"]
        size = body.get("dimensions") or 4
        # counts no tokenizer would give: tests tell the provider's own counts from the gateway's
        billed, answer = 10 * _words(text), {"embedding": ([float(len(text)), 0.5, -0.25, 1.0] * size)[:size],
                                             "inputTextTokenCount": 10 * _words(text)}
    else:
        billed = sum(7 * _words(t) + 1 for t in body["texts"])
        answer = {"id": "fake", "response_type": "embeddings_floats", "texts": body["texts"],
                  "embeddings": [[float(len(t)), 0.5, -0.25] for t in body["texts"]]}
    counted = {} if behaviour.kind == "no_usage" else {"X-Amzn-Bedrock-Input-Token-Count": str(billed)}
    return JSONResponse(answer, headers=counted)


def upstream_app(upstreams: Upstreams) -> Starlette:
    app = Starlette(routes=[
        Route("/u/{name}/v1/chat/completions", openai_chat, methods=["POST"]),
        Route("/u/{name}/v1/embeddings", openai_embeddings, methods=["POST"]),
        # Azure OpenAI: OpenAI's protocol under a deployment's path, with ?api-version=... and an api-key header
        Route("/u/{name}/openai/deployments/{deployment}/chat/completions", _azure(openai_chat), methods=["POST"]),
        Route("/u/{name}/openai/deployments/{deployment}/embeddings", _azure(openai_embeddings), methods=["POST"]),
        Route("/entra/{directory}/oauth2/v2.0/token", entra_token, methods=["POST"]),
        Route("/u/{name}/v1/messages", anthropic_messages, methods=["POST"]),
        Route("/u/{name}/v1beta/models/{rest:path}", gemini, methods=["POST"]),
        Route("/u/{name}/model/{model}/converse", bedrock_converse, methods=["POST"]),
        Route("/u/{name}/model/{model}/converse-stream", bedrock_converse, methods=["POST"]),
        Route("/u/{name}/model/{model}/invoke", bedrock_invoke, methods=["POST"]),
    ])
    app.state.upstreams = upstreams
    return app
