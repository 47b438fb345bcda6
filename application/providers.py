"""The Provider port: one upstream call in OpenAI's shapes, whatever the upstream speaks.

Two adapters implement it (adapters/providers/): a direct pass-through for OpenAI-compatible upstreams
and litellm for the ones that need translating (Anthropic Messages, Gemini). docs/gateway.md says why.
Adapters raise `UpstreamFailure` with a `FailureKind` (domain/deployments.py) and never anything else
for an upstream problem, so routing decisions (retry, fall back, give up) are made in one place.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from application.deployments import Route
from domain.deployments import FailureKind


class UpstreamFailure(Exception):
    def __init__(self, kind: FailureKind, detail: str, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{kind.reason}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class UpstreamCall:
    route: Route
    body: dict[str, Any]  # the client's request body, gateway-only fields removed
    timeout_s: float  # what is left of this attempt; adapters pass it to their client as a backstop


@dataclass(frozen=True)
class Answer:
    """A whole response: the bytes the client gets (OpenAI shape) and the same, parsed."""

    data: bytes
    obj: dict[str, Any]


@dataclass(frozen=True)
class Chunk:
    """One streamed chunk: its JSON bytes as relayed (OpenAI chunk shape) and the same, parsed."""

    data: bytes
    obj: dict[str, Any]


class UpstreamStream(abc.ABC):
    """An open streamed response."""

    @abc.abstractmethod
    async def next(self) -> Chunk | None:
        """The next chunk, None at the end; UpstreamFailure if the stream broke."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the upstream connection (stops generation when the client went away)."""


class Provider(abc.ABC):
    """One way of calling upstreams."""

    @abc.abstractmethod
    async def complete(self, call: UpstreamCall) -> Answer:
        """A chat completion, whole."""

    @abc.abstractmethod
    async def open_stream(self, call: UpstreamCall) -> UpstreamStream:
        """A streamed chat completion, once the upstream has accepted it; usage must be asked for."""

    @abc.abstractmethod
    async def embed(self, call: UpstreamCall) -> Answer:
        """Embeddings."""

    async def aclose(self) -> None:  # noqa: B027 - optional: only pooling adapters override it
        """Release pooled connections."""
