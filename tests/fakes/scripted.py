"""A fake OpenAI-compatible upstream whose replies are scripted by what the prompt says.

`/s/<name>/v1/chat/completions` is upstream `<name>`. Each upstream has rules: (substring, replies);
the first rule whose substring occurs in the request's messages answers with its next reply (the last
one repeats), else the upstream's default reply. Matching on the prompt, not on arrival order, keeps
replies deterministic while the orchestrator calls models concurrently.

Usage is exact and simple: one token per whitespace-separated word (prompt: every message's words).
Streams send one chunk per word, then the usage chunk when `stream_options.include_usage` asks for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Rule:
    match: str
    replies: list[str]
    used: int = 0

    def next(self) -> str:
        reply = self.replies[min(self.used, len(self.replies) - 1)]
        self.used += 1
        return reply


@dataclass
class Responder:
    default: str = "ok"
    rules: list[Rule] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def when(self, match: str, *replies: str) -> Responder:
        self.rules.append(Rule(match, list(replies)))
        return self

    def reply(self, prompt: str) -> str:
        for rule in self.rules:
            if rule.match in prompt:
                return rule.next()
        return self.default


class Scripted:
    def __init__(self) -> None:
        self._responders: dict[str, Responder] = {}
        self._lock = threading.Lock()
        self.url = ""

    def responder(self, name: str) -> Responder:
        with self._lock:
            return self._responders.setdefault(name, Responder())

    def base(self, name: str) -> str:
        return f"{self.url}/s/{name}/v1"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


async def chat(request: Request) -> Response:
    scripted: Scripted = request.app.state.scripted
    responder = scripted.responder(request.path_params["name"])
    body = orjson.loads(await request.body())
    prompt = "\n".join(_text(m.get("content")) for m in body.get("messages", []))
    with scripted._lock:
        responder.requests.append(body)
        reply = responder.reply(prompt)
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(reply.split()),
             "total_tokens": len(prompt.split()) + len(reply.split())}
    base = {"id": "chatcmpl-scripted", "created": 1_700_000_000, "model": body["model"]}
    if not body.get("stream"):
        return JSONResponse({**base, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]})

    def frames() -> Iterator[bytes]:
        words = reply.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        last = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield b"data: " + orjson.dumps(last) + b"\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            yield b"data: " + orjson.dumps({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream")


def scripted_app(scripted: Scripted) -> Starlette:
    app = Starlette(routes=[Route("/s/{name}/v1/chat/completions", chat, methods=["POST"])])
    app.state.scripted = scripted
    return app
