"""The gateway's use case: pick deployments, call upstreams with retries and fallbacks, record the outcome.

Recording. Every request that reaches an upstream ends with two events on the stream
`inference-<request id>`: InferenceRequested, then InferenceCompleted or InferenceFailed. The
InferenceRequested (with a `deadline_at`: the request's timeout plus a grace) is appended on its own
as soon as the upstream call has lasted `record_requested_after_s`, while the call goes on, so a
process killed mid-request leaves it behind, and the sweeper (application/inference_sweeper.py)
later closes it with InferenceFailed(gateway_interrupted). A call that ends sooner is recorded in one
atomic append of both events (one group-commit slot). Either way nothing is half-recorded for a
request that was answered, and requests refused before any upstream call (bad JSON, unknown model,
auth) record nothing. In strict recording (NEXUS_RECORD_BEFORE_UPSTREAM for the whole deployment, or a
tenant's recording mode, `DeploymentService.set_recording`) the InferenceRequested is committed before the
first attempt instead, and a ledger that cannot take it means no upstream call.

Streams. The response starts once an upstream has produced its first chunk, so retries and fallbacks
cover everything before that. The InferenceCompleted event id is fixed up front and announced in the
`Nexus-Receipt` header as pending; the append happens when the stream ends, and its receipt travels
in the last chunk. A stream cut by the client, or broken by the upstream, is still recorded as
completed with what was produced (`finish` says which), with tokens counted from the chunks when the
provider's usage never arrived (`usage_source: "counted"`).

Content. The prompt and the completion are sealed together by `privacy.protect` into the outcome
event's `content` field (one data key per subject: the OpenAI `user` field, else the API key id).
Without a privacy service no content is stored at all.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from application.deployments import DeploymentService, Route
from application.ports import Ledger
from application.providers import Answer, Chunk, Provider, UpstreamCall, UpstreamFailure, UpstreamStream
from domain.deployments import (
    BROKEN_RESPONSE,
    KEY_REVOKED,
    PROVIDERS,
    TIMEOUT,
    Deployment,
    attempt_order,
    backoff_s,
)
from domain.inference import (
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    deadline_after,
    inference_stream,
)
from domain.ledger import ConcurrencyError, EventIdConflict, LedgerError, LedgerUnavailable, NewEvent, Receipt
from domain.pricing import cost_micros

log = logging.getLogger(__name__)
T = TypeVar("T")
_SEAL_INLINE_BYTES = 16 * 1024  # larger content is encrypted in a worker thread, off the event loop


class ContentProtector(Protocol):
    def protect(self, tenant_id: str, subject_id: str, value: Any) -> dict[str, Any]: ...

    def sealer(self, tenant_id: str, subject_id: str) -> Callable[[Any], dict[str, Any]]: ...

    async def sealer_async(self, tenant_id: str, subject_id: str) -> tuple[Callable[[Any], dict[str, Any]], str, int]:
        """The sealer, and the tenant stream and version its content switch holds for (a condition)."""

    def forget_switch(self, tenant_id: str) -> None: ...


class TokenCounting(Protocol):
    """Counts tokens when a provider reported no usage (adapters/providers/tokens.py)."""

    def tokenizer(self, provider: str, model: str) -> str: ...

    def count(self, provider: str, model: str, text: str) -> int: ...

    def count_chat(self, provider: str, model: str, contents: list[str]) -> int: ...


class RoughCounter:
    """Four characters make a token: the counter without a tokenizer."""

    def tokenizer(self, provider: str, model: str) -> str:
        return "chars/4"

    def count(self, provider: str, model: str, text: str) -> int:
        return (len(text) + 3) // 4

    def count_chat(self, provider: str, model: str, contents: list[str]) -> int:
        return sum(self.count(provider, model, c) for c in contents)


PROVIDER_USAGE: dict[str, Any] = {"usage_source": "provider", "usage_estimated": False}


@dataclass(frozen=True)
class GatewayConfig:
    default_timeout_s: float = 60.0
    max_timeout_s: float = 600.0
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    max_content_bytes: int = 96 * 1024  # sealed content above this is left out (the event limit is 256 KiB)
    # InferenceRequested is appended on its own once the upstream call has lasted this long (so a process
    # killed mid-request leaves a record the sweeper closes); a call that ends sooner is recorded in one
    # append with its outcome. 0: always at once. Docs: docs/gateway.md, "Events and receipts".
    record_requested_after_s: float = 0.005
    # Strict recording: InferenceRequested is committed before any byte goes upstream, so that no process
    # can die having made a call it left no record of (with the timer above, one killed within its 5 ms
    # can). The price is a second commit on every response path (docs/gateway.md, "In flight"). On for every
    # tenant here; a tenant can also ask for it alone (its recording mode, in its routing table).
    record_before_upstream: bool = False
    # Added to a request's timeout for its deadline_at: past it, the sweeper closes a request left open.
    sweep_grace_s: float = 30.0
    # The longest a stream may run after its first chunk (each wait between chunks is bounded by the
    # timeout too): a stream's deadline_at must hold however long the provider keeps generating.
    max_stream_s: float = 1800.0


class KeyCheck:
    """The caller's API key went ahead unread: its stream, the version this process last read it at, and
    the read that confirms it (the version if the key still stands, None if not).

    A whole answer is recorded on the condition that the key's stream is still at that version, checked
    inside the append under the ledger's lock, and read only if it moved; a stream, whose answer starts
    before anything is recorded, is confirmed by the read (started with the request, so it overlaps the
    upstream call).
    """

    def __init__(self, stream_id: str, version: int, read: Callable[[], Awaitable[int | None]]) -> None:
        self.stream_id = stream_id
        self.version = version
        self._read = read
        self._reading: asyncio.Future[int | None] | None = None

    def start_reading(self) -> asyncio.Future[int | None]:
        """The read, started once (later calls share it)."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        return self._reading

    async def read_again(self) -> int | None:
        """A fresh read, after the key's stream moved on from the version of the last one."""
        self._reading = None
        version = await self.start_reading()
        if version is not None:
            self.version = version
        return version


@dataclass(frozen=True)
class InferenceRequest:
    tenant_id: str
    key_id: str
    kind: str  # "chat" | "embeddings"
    model: str  # the model name the client asked for
    body: dict[str, Any]  # forwarded upstream; gateway-only fields already removed
    stream: bool
    include_usage: bool  # the client asked for the usage chunk
    timeout_s: float
    subject_id: str
    request_id: str
    correlation_id: str
    causation_id: str
    # The caller's API key went ahead unread (application/identity.py, recently_authenticated): no answer is
    # handed out before it is confirmed, by the append's condition or by the read.
    key_check: KeyCheck | None = None


class GatewayError(Exception):
    """What the client is told, in OpenAI's error terms; `receipt` when the failure was recorded."""

    def __init__(self, status: int, message: str, type: str, code: str, receipt: Receipt | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.receipt = receipt


def model_not_found(model: str) -> GatewayError:
    return GatewayError(404, f"the model {model!r} does not exist or this key's tenant has no deployment of it",
                        "invalid_request_error", "model_not_found")


@dataclass(frozen=True)
class Completion:
    answer: Answer
    receipt: Receipt


class _ConditionMoved(Exception):
    """A stream the record was conditioned on moved on from the version it was read at."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.stream_id = stream_id


_Sealer = tuple[Callable[[Any], dict[str, Any]], str, int]  # seal, and the tenant's stream and version it holds for
_CONDITION_ROUNDS = 3


class _Exhausted(Exception):
    def __init__(self, failure: UpstreamFailure, route: Route, attempts: list[dict[str, Any]], out_of_time: bool):
        super().__init__(failure.detail)
        self.failure = failure
        self.route = route
        self.attempts = attempts
        self.out_of_time = out_of_time

    @property
    def reason(self) -> str:
        return "timeout" if self.out_of_time else self.failure.kind.reason


def _tokens(usage: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(in, out, cached, reasoning) from an OpenAI-shaped usage object (DeepSeek's cache field included)."""

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    cached = count((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or count(
        usage.get("prompt_cache_hit_tokens"))
    reasoning = count((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))
    return count(usage.get("prompt_tokens")), count(usage.get("completion_tokens")), cached, reasoning


def _first(value: Any) -> Any:
    """A text, or the first item of a list of texts or token arrays (a token array's first item is a token)."""
    return value[0] if isinstance(value, list) and value else value


def _text_of(value: Any) -> str:
    """The text in message contents: strings, or lists of text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(p.get("text") if isinstance(p, dict) else p) for p in value)
    return ""


def prompt_text(request: InferenceRequest) -> str:
    if request.kind == "embeddings":
        return _text_of(request.body.get("input"))
    return "\n".join(_text_of(m.get("content")) for m in request.body.get("messages") or [] if isinstance(m, dict))


def receipt_fields(receipt: Receipt) -> dict[str, Any]:
    return {"position": receipt.position, "event_id": str(receipt.event_id), "entry_hash": receipt.entry_hash.hex()}


class Gateway:
    def __init__(
        self, ledger: Ledger, deployments: DeploymentService, providers: Mapping[str, Provider], *,
        privacy: ContentProtector | None = None, config: GatewayConfig | None = None,
        token_counter: Callable[[], TokenCounting] | None = None,
    ) -> None:
        self._ledger = ledger
        self._deployments = deployments
        self._providers = providers
        self._privacy = privacy
        self.config = config or GatewayConfig()
        self._token_counter_factory = token_counter
        self._counter: TokenCounting | None = None
        self._busy: collections.Counter[tuple[str, str]] = collections.Counter()
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}

    async def aclose(self) -> None:
        for provider in set(self._providers.values()):
            await provider.aclose()

    # --- routing ----------------------------------------------------------------------------------

    async def routes(self, request: InferenceRequest) -> tuple[list[Route], bool]:
        """The deployments that may serve this request, and whether its InferenceRequested must be committed
        before any upstream call (NEXUS_RECORD_BEFORE_UPSTREAM, or the tenant's recording mode); GatewayError
        404/400 (nothing recorded) if none."""
        deployments, model = self._deployments, request.model
        table = deployments.cached_routes(request.tenant_id)
        if table is None:
            table = await asyncio.to_thread(deployments.routes, request.tenant_id)
        found = table.get(model)
        if not found:
            raise model_not_found(model)
        if request.kind == "embeddings":
            found = [r for r in found if PROVIDERS[r.deployment.provider].embeddings]
            if not found:
                raise GatewayError(400, f"no deployment of {model!r} serves embeddings", "invalid_request_error",
                                   "embeddings_not_supported")
            if not isinstance(_first(request.body.get("input")), str):
                found = [r for r in found if PROVIDERS[r.deployment.provider].embeds_token_ids]
                if not found:
                    raise GatewayError(400, f"no deployment of {model!r} embeds token arrays: send text",
                                       "invalid_request_error", "token_input_not_supported")
        return found, self.config.record_before_upstream or table.strict_recording

    def models(self, tenant_id: str) -> dict[str, list[Deployment]]:
        return {name: [r.deployment for r in routes] for name, routes in self._deployments.routes(tenant_id).models.items()}

    async def _route(
        self, request: InferenceRequest, routes: list[Route],
        action: Callable[[Provider, UpstreamCall], Awaitable[T]], flight: _Flight,
    ) -> tuple[T, Route, list[dict[str, Any]]]:
        """Try deployments in order (domain.deployments.attempt_order) until one answers or time runs out.

        Each attempt gets the request's remaining time, or the deployment's own limit if smaller, so a
        slow deployment can time out and still leave time for a fallback.
        """
        deadline = time.monotonic() + request.timeout_s
        turn = self._turns.setdefault((request.tenant_id, request.model), itertools.count())
        by_name = {r.deployment.name: r for r in routes}
        busy = {r.deployment.name: self._busy[(request.tenant_id, r.deployment.name)] for r in routes}
        order = attempt_order([r.deployment for r in routes], busy, next(turn))
        flight.start(by_name[order[0].name])
        if flight.strict and not await flight.record_requested_now():
            raise GatewayError(503, "the ledger could not record this inference before calling the upstream, so"
                               " no call was made; retry later", "api_error", "ledger_unavailable")
        attempts: list[dict[str, Any]] = []
        last: tuple[UpstreamFailure, Route] | None = None
        for deployment in order:
            route = by_name[deployment.name]
            provider = self._providers[deployment.wire]
            retries = 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                limit = min(remaining, deployment.timeout_ms / 1000) if deployment.timeout_ms else remaining
                key = (request.tenant_id, deployment.name)
                started = time.perf_counter_ns()
                self._busy[key] += 1
                try:
                    async with asyncio.timeout(limit):
                        result = await action(provider, UpstreamCall(route, request.body, limit))
                except UpstreamFailure as exc:
                    failure = exc
                except TimeoutError:
                    failure = UpstreamFailure(TIMEOUT, f"no answer within {limit:.3f} s")
                else:
                    attempts.append(_attempt(len(attempts) + 1, deployment, "ok", 200, started))
                    return result, route, attempts
                finally:
                    self._busy[key] -= 1
                attempts.append(_attempt(len(attempts) + 1, deployment, failure.kind.reason, failure.status, started,
                                         failure.detail))
                last = (failure, route)
                if not failure.kind.retry and not failure.kind.fall_back:
                    raise _Exhausted(failure, route, attempts, out_of_time=False)
                if failure.kind.retry and retries < deployment.max_retries:
                    retries += 1
                    delay = backoff_s(retries, self.config.backoff_base_s, self.config.backoff_cap_s,
                                      failure.retry_after_s)
                    if time.monotonic() + delay < deadline:
                        await asyncio.sleep(delay)
                        continue
                break
            if time.monotonic() >= deadline:
                break
        if last is None:  # the deadline passed before any attempt could start
            last = (UpstreamFailure(TIMEOUT, "no time left for any attempt"), by_name[order[0].name])
        raise _Exhausted(last[0], last[1], attempts, out_of_time=time.monotonic() >= deadline)

    # --- non-streaming ----------------------------------------------------------------------------

    async def complete(self, request: InferenceRequest) -> Completion:
        """A chat completion or embeddings, recorded before it is returned."""
        routes, strict = await self.routes(request)
        started = time.perf_counter_ns()
        flight = _Flight(self, request, strict)

        async def call(provider: Provider, upstream: UpstreamCall) -> Answer:
            return await (provider.embed(upstream) if request.kind == "embeddings" else provider.complete(upstream))

        try:
            answer, route, attempts = await self._route(request, routes, call, flight)
        except _Exhausted as exhausted:
            raise await self._record_failure(request, exhausted, started, flight) from None
        latency_us = (time.perf_counter_ns() - started) // 1000
        usage = answer.obj.get("usage")
        if isinstance(usage, dict):
            tokens, source = _tokens(usage), PROVIDER_USAGE
        else:
            tokens, source = self._estimate(request, route, _answer_text(answer.obj))
            if request.kind == "embeddings":  # OpenAI's embeddings answer always has usage, and SDKs read it
                obj = {**answer.obj, "usage": {"prompt_tokens": tokens[0], "total_tokens": tokens[0]}}
                answer = Answer(orjson.dumps(obj), obj)
        completion = None if request.kind == "embeddings" else _answer_messages(answer.obj)
        try:
            receipt = await self._record_completion(request, flight, route, attempts, tokens, source, latency_us,
                                                    None, "complete", completion, uuid.uuid4(), request.key_check)
        except _Exhausted as revoked:  # the key's condition failed, and its read found it revoked
            raise await self._record_failure(request, revoked, started, flight) from None
        except LedgerUnavailable:  # an answer without its record is not given out
            raise GatewayError(503, "the ledger could not record this inference, so its answer is withheld;"
                               " retry later", "api_error", "ledger_unavailable") from None
        return Completion(answer, receipt)

    # --- streaming --------------------------------------------------------------------------------

    async def open_stream(self, request: InferenceRequest) -> InferenceStream:
        """An upstream stream that has produced its first chunk; failures before that are recorded and raised."""
        if request.key_check is not None:
            request.key_check.start_reading()  # it overlaps the upstream call; awaited before the first chunk
        routes, strict = await self.routes(request)
        started = time.perf_counter_ns()
        flight = _Flight(self, request, strict)

        async def call(provider: Provider, upstream: UpstreamCall) -> tuple[UpstreamStream, Chunk]:
            stream = await provider.open_stream(upstream)
            try:
                first = await stream.next()
            except BaseException:
                await _quietly_close(stream)
                raise
            if first is None:
                await _quietly_close(stream)
                raise UpstreamFailure(BROKEN_RESPONSE, "upstream stream ended before its first chunk")
            return stream, first

        try:
            (stream, first), route, attempts = await self._route(request, routes, call, flight)
            try:
                await _confirmed(request, route, attempts)
            except _Exhausted:
                await _quietly_close(stream)
                raise
        except _Exhausted as exhausted:
            raise await self._record_failure(request, exhausted, started, flight) from None
        return InferenceStream(self, request, flight, route, attempts, stream, first, started)

    # --- recording --------------------------------------------------------------------------------

    def _estimate(self, request: InferenceRequest, route: Route,
                  completion: str) -> tuple[tuple[int, int, int, int], dict[str, Any]]:
        """Tokens counted by the gateway when the provider reported no usage, and how (always an estimate)."""
        if self._counter is None:
            factory = self._token_counter_factory
            self._counter = factory() if factory else RoughCounter()
        counter, d = self._counter, route.deployment
        if request.kind == "embeddings":
            tokens_in, tokens_out = counter.count(d.provider, d.model, prompt_text(request)), 0
        else:
            contents = [_text_of(m.get("content")) for m in request.body.get("messages") or [] if isinstance(m, dict)]
            tokens_in = counter.count_chat(d.provider, d.model, contents)
            tokens_out = counter.count(d.provider, d.model, completion)
        note = {"usage_source": "counted", "usage_estimated": True,
                "usage_tokenizer": counter.tokenizer(d.provider, d.model)}
        return (tokens_in, tokens_out, 0, 0), note

    async def _record_completion(
        self, request: InferenceRequest, flight: _Flight, route: Route, attempts: list[dict[str, Any]],
        tokens: tuple[int, int, int, int], usage: dict[str, Any], latency_us: int, ttft_us: int | None, finish: str,
        completion: Any, completed_id: uuid.UUID, key_check: KeyCheck | None = None,
    ) -> Receipt:
        d = route.deployment
        tokens_in, tokens_out, cached, reasoning = tokens
        completed = InferenceCompleted(
            request_id=request.request_id, provider=d.provider, model=d.model, deployment=d.name, region=d.region,
            tokens_in=tokens_in, tokens_out=tokens_out, tokens_cached=min(cached, tokens_in),
            tokens_reasoning=min(reasoning, tokens_out), latency_us=latency_us, ttft_us=ttft_us,
            cost_micros=cost_micros(d.price, tokens_in, tokens_out, cached), currency=d.price.currency,
            price_table_version=d.price.version,
        ).payload()
        completed.update(attempts=attempts, finish=finish, kind=request.kind, **usage)
        return await self._close(request, flight, "InferenceCompleted", completed, completed_id, completion,
                                 key_check, route, attempts)

    async def _record_failure(self, request: InferenceRequest, exhausted: _Exhausted, started: int,
                              flight: _Flight) -> GatewayError:
        d = exhausted.route.deployment
        reason = exhausted.reason
        failed = InferenceFailed(
            request_id=request.request_id, provider=d.provider, model=d.model, deployment=d.name, region=d.region,
            reason=reason, detail=exhausted.failure.detail[:500],
            latency_us=(time.perf_counter_ns() - started) // 1000,
        ).payload()
        failed.update(attempts=exhausted.attempts, kind=request.kind)
        flight.start(exhausted.route)  # a no-op unless no attempt could start
        try:
            receipt = await self._close(request, flight, "InferenceFailed", failed, uuid.uuid4(), None, None,
                                        exhausted.route, exhausted.attempts)
        except (LedgerUnavailable, _Exhausted):
            receipt = None
        tried = len(exhausted.attempts)
        if reason == KEY_REVOKED.reason:
            return GatewayError(401, "missing, malformed or revoked API key", "authentication_error",
                                "invalid_api_key")  # no receipt: a revoked key is told nothing more
        if reason == "timeout":
            return GatewayError(504, f"the upstream did not answer in time ({tried} attempts)", "api_error",
                                "upstream_timeout", receipt)
        if reason == "bad_request":
            return GatewayError(400, f"the upstream refused the request: {exhausted.failure.detail}",
                                "invalid_request_error", "upstream_bad_request", receipt)
        return GatewayError(502, f"every deployment of {request.model!r} failed ({tried} attempts; last: {reason})",
                            "api_error", "upstream_error", receipt)

    async def _close(
        self, request: InferenceRequest, flight: _Flight, outcome_type: str, payload: dict[str, Any],
        outcome_id: uuid.UUID, completion: Any, key_check: KeyCheck | None, route: Route,
        attempts: list[dict[str, Any]],
    ) -> Receipt:
        """Seal the content and record the outcome, on the conditions that the tenant's content switch and
        the caller's key (`key_check`) are still as read; when one moved on, read it again and retry.

        _Exhausted(key_revoked) when the key turned out revoked: the answer is withheld.
        """
        for _ in range(_CONDITION_ROUNDS):
            conditions: dict[str, int] = {}
            content = await self._seal(request, flight, completion, with_completion=outcome_type != "InferenceFailed",
                                       conditions=conditions)
            if content is not None:
                payload["content"] = content
            if key_check is not None:
                conditions[key_check.stream_id] = key_check.version
            try:
                return await flight.close(outcome_type, payload, outcome_id, conditions)
            except _ConditionMoved as moved:
                if key_check is not None and moved.stream_id == key_check.stream_id:
                    if await key_check.read_again() is None:
                        raise _key_revoked(route, attempts) from None
                elif self._privacy is not None:
                    self._privacy.forget_switch(request.tenant_id)
                    flight.sealing = self._sealer(request)
        raise LedgerUnavailable(f"the conditions of inference {request.request_id} kept moving")

    def _sealer(self, request: InferenceRequest) -> asyncio.Future[_Sealer | None] | None:
        """The reads sealing needs (the tenant's content switch, the subject's data key): from this process's
        caches at once, else started now as a task of their own so that they overlap the upstream call;
        None without privacy."""
        privacy = self._privacy
        if privacy is None:
            return None
        try:
            cached = privacy.cached_sealer(request.tenant_id, request.subject_id)
        except Exception:  # an invalid id: prepare() below logs it and seals nothing
            cached = None
        if cached is not None:  # no task to schedule: the switch and the key are in this process already
            ready: asyncio.Future[_Sealer | None] = asyncio.get_running_loop().create_future()
            ready.set_result(cached)
            return ready

        async def prepare() -> _Sealer | None:
            try:
                return await privacy.sealer_async(request.tenant_id, request.subject_id)
            except Exception:  # recorded as sealing_failed: never plaintext
                log.exception("preparing to seal the content of inference %s failed", request.request_id)
                return None

        return asyncio.ensure_future(prepare())

    async def _seal(self, request: InferenceRequest, flight: _Flight, completion: Any, *,
                    with_completion: bool, conditions: dict[str, int]) -> Any:
        """One envelope holding the prompt (and the completion); None without privacy.

        One envelope per inference, with the switch and the key read once, while the upstream call was
        in flight (`_sealer`): only the AES-GCM is left here, on the event loop for small content. The
        tenant's stream at the version the switch was read at goes into `conditions`.
        """
        if flight.sealing is None:
            return None
        value: dict[str, Any] = {
            "prompt": request.body.get("input") if request.kind == "embeddings" else request.body.get("messages")}
        if with_completion and completion is not None:
            value["completion"] = completion
        sealer = await flight.sealing
        if sealer is None:
            return {"omitted": "sealing_failed"}
        seal, tenant_stream, version = sealer
        conditions[tenant_stream] = version
        size = len(orjson.dumps(value))
        if size > self.config.max_content_bytes:
            return {"omitted": "too_large", "bytes": size}

        def protect() -> Any:
            try:
                return seal(value)
            except Exception:  # never plaintext: record the usage without the content
                log.exception("sealing content of inference %s failed", request.request_id)
                return {"omitted": "sealing_failed"}

        return protect() if size <= _SEAL_INLINE_BYTES else await asyncio.to_thread(protect)


class _Flight:
    """One request's InferenceRequested: recorded on its own while the upstream call is in flight, or
    together with the outcome.

    `start(route)` (the first attempt's deployment) builds the event, with its `deadline_at`, and arms
    a timer of `record_requested_after_s`. When the timer fires, the event is appended alone (expected
    version 0) as a task of its own: the upstream call goes on meanwhile, so that commit overlaps the
    call instead of preceding it. `close()` appends the outcome: together with the InferenceRequested
    (expected version 0, one atomic append, as for calls faster than the timer) if the timer had not
    fired, else alone at expected version 1, submitted at once behind the pending InferenceRequested:
    the committer keeps their order, and if that append had not committed (or failed), the outcome's
    version check fails and `close()` waits for it and tries again the right way. A version beyond 1
    means the sweeper closed the request already: LedgerUnavailable, as for any record we cannot make.
    """

    def __init__(self, gateway: Gateway, request: InferenceRequest, strict: bool) -> None:
        self._ledger = gateway._ledger
        self.strict = strict  # the InferenceRequested is committed before the first attempt
        self._config = gateway.config
        self._request = request
        self._stream = inference_stream(request.request_id)
        self.sealing = gateway._sealer(request)
        self.event: NewEvent | None = None
        self.ends_at = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._pending: asyncio.Task[bool] | None = None

    def start(self, route: Route) -> None:
        if self.event is not None:
            return
        r, d, config = self._request, route.deployment, self._config
        lifetime = r.timeout_s + (config.max_stream_s if r.stream else 0.0)
        self.ends_at = time.monotonic() + lifetime  # enforced: a live request never outlasts its deadline_at
        payload = InferenceRequested(
            request_id=r.request_id, provider=d.provider, model=d.model, deployment=d.name, region=d.region,
            api_key_id=r.key_id, stream=r.stream,
            deadline_at=deadline_after(dt.datetime.now(dt.UTC), lifetime + config.sweep_grace_s),
        ).payload()
        payload.update(kind=r.kind, requested_model=r.model, subject_id=r.subject_id)
        self.event = NewEvent(self._stream, "InferenceRequested", payload, tenant_id=r.tenant_id,
                              event_id=uuid.uuid4(),
                              metadata={"correlation_id": r.correlation_id, "causation_id": r.causation_id})
        if self.strict:
            return  # the caller awaits record_requested_now() before the first attempt
        if config.record_requested_after_s <= 0:
            self._fire()
        else:
            self._timer = asyncio.get_running_loop().call_later(config.record_requested_after_s, self._fire)

    async def record_requested_now(self) -> bool:
        """Append the InferenceRequested and wait for its commit; False if the ledger would not take it."""
        if self._pending is None:
            self._fire()
        assert self._pending is not None
        return await asyncio.shield(self._pending)

    def _fire(self) -> None:
        self._timer = None
        self._pending = asyncio.ensure_future(self._append_requested())

    async def _append_requested(self) -> bool:
        """True once recorded; False if the ledger would not take it (close() then writes it with the outcome)."""
        assert self.event is not None
        for attempt in range(3):  # the same event id each time: a retry never records twice
            try:
                await self._ledger.append_async([self.event], {self._stream: 0})
                return True
            except LedgerUnavailable:
                await asyncio.sleep(0.05 * (attempt + 1))
            except LedgerError as exc:  # nothing else is expected: the stream is this request's own
                log.error("InferenceRequested of %s was refused: %s", self._request.request_id, exc)
                return False
        return False

    async def close(self, outcome_type: str, payload: dict[str, Any], outcome_id: uuid.UUID,
                    conditions: Mapping[str, int]) -> Receipt:
        """Record the outcome (and the InferenceRequested if it is not recorded yet); the outcome's receipt.

        `conditions`: other streams' versions the record depends on (_ConditionMoved if one moved on).
        """
        assert self.event is not None
        r = self._request
        outcome = NewEvent(self._stream, outcome_type, payload, tenant_id=r.tenant_id, event_id=outcome_id,
                           metadata={"correlation_id": r.correlation_id, "causation_id": str(self.event.event_id)})
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self._pending
        together = pending is None
        failures = 0
        while True:  # the same event ids each time: a retry never records twice
            try:
                if together:
                    return (await self._ledger.append_async([self.event, outcome], {self._stream: 0, **conditions}))[1]
                return (await self._ledger.append_async([outcome], {self._stream: 1, **conditions}))[0]
            except ConcurrencyError as exc:
                if exc.stream_id != self._stream:
                    raise _ConditionMoved(exc.stream_id) from None
                if together or exc.actual != 0 or pending is None:
                    log.error("inference %s was closed before its outcome could be recorded", r.request_id)
                    raise LedgerUnavailable(f"inference {r.request_id} is closed already") from None
                together = not await pending  # its InferenceRequested was still on its way, or failed
                pending = None
            except EventIdConflict:  # the InferenceRequested is recorded after all (its append's fate was unknown)
                together = False
            except LedgerUnavailable:
                failures += 1
                if failures == 3:
                    log.error("inference %s could not be recorded", r.request_id)
                    raise
                await asyncio.sleep(0.05 * failures)


class InferenceStream:
    """A streamed completion in flight: relays chunks, observes usage and content, records once at the end."""

    def __init__(self, gateway: Gateway, request: InferenceRequest, flight: _Flight, route: Route,
                 attempts: list[dict[str, Any]], upstream: UpstreamStream, first: Chunk, started_ns: int) -> None:
        self.request = request
        self._flight = flight
        self.route = route
        self.completed_id = uuid.uuid4()  # announced as the pending receipt before the stream starts
        self.broken: UpstreamFailure | None = None
        self._gateway = gateway
        self._attempts = attempts
        self._upstream = upstream
        self._pending: Chunk | None = first
        self._started = started_ns
        self._first_ns = time.perf_counter_ns()
        self._last_ns = self._first_ns
        self._usage: dict[str, Any] | None = None
        self._usage_chunk: Chunk | None = None
        self._texts: dict[int, list[str]] = {}
        self._tools: dict[tuple[int, int], dict[str, Any]] = {}
        self._template: dict[str, Any] = {k: first.obj.get(k) for k in ("id", "created", "model")}
        self._recording: asyncio.Future[Receipt | None] | None = None
        self._relayed = 0
        self.tokens: tuple[int, int, int, int] = (0, 0, 0, 0)  # as recorded

    async def chunks(self) -> AsyncIterator[bytes]:
        """The chunks for the client as JSON bytes; a usage-only chunk is held back for `final_chunks`."""
        idle = self.route.deployment.timeout_ms / 1000 if self.route.deployment.timeout_ms else self.request.timeout_s
        try:
            while True:
                chunk = self._pending
                if chunk is not None:
                    self._pending = None
                else:
                    left = self._flight.ends_at - time.monotonic()
                    try:
                        async with asyncio.timeout(min(idle, left)):
                            chunk = await self._upstream.next()
                    except UpstreamFailure as failure:
                        self.broken = failure
                        return
                    except TimeoutError:
                        self.broken = UpstreamFailure(TIMEOUT, f"the upstream stream stalled for {idle:.3f} s" if idle < left
                                                      else "the stream ran past its longest allowed duration")
                        return
                    if chunk is None:
                        return
                self._last_ns = time.perf_counter_ns()
                if self._observe(chunk):
                    continue
                self._relayed += 1
                yield chunk.data
        finally:
            await _quietly_close(self._upstream)

    def _observe(self, chunk: Chunk) -> bool:
        """Note usage and content; True if the chunk carries nothing but usage (held back)."""
        obj = chunk.obj
        choices = obj.get("choices") or []
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
            if not choices:
                self._usage_chunk = chunk
                return True
        for choice in choices:
            index = choice.get("index", 0) if isinstance(choice, dict) else 0
            delta = (choice.get("delta") if isinstance(choice, dict) else None) or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._texts.setdefault(index, []).append(content)
            for call in delta.get("tool_calls") or []:
                slot = self._tools.setdefault((index, call.get("index", 0)), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
        return False

    def _completion(self) -> list[dict[str, Any]]:
        indexes = sorted(set(self._texts) | {i for i, _ in self._tools})
        out = []
        for i in indexes:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(self._texts.get(i, [])) or None}
            calls = [{"type": "function", "function": f} for (ci, _), f in sorted(self._tools.items()) if ci == i]
            if calls:
                message["tool_calls"] = calls
            out.append(message)
        return out

    async def finish(self, client_gone: bool = False) -> Receipt | None:
        """Record the stream (once, whoever calls first); None if the ledger could not take it.

        The recording runs as its own task, so a cancelled caller (the client went away) cannot cut it short.
        """
        if self._recording is None:
            self._recording = asyncio.ensure_future(self._record(client_gone))
        return await asyncio.shield(self._recording)

    async def _record(self, client_gone: bool) -> Receipt | None:
        gateway = self._gateway
        if self._usage is not None:
            tokens, source = _tokens(self._usage), PROVIDER_USAGE
        else:
            text = "".join("".join(parts) for parts in self._texts.values())
            text += "".join(f["name"] + f["arguments"] for f in self._tools.values())
            tokens, source = gateway._estimate(self.request, self.route, text)
        self.tokens = tokens
        finish = "client_cancelled" if client_gone else ("upstream_cut" if self.broken else "complete")
        try:
            return await gateway._record_completion(
                self.request, self._flight, self.route, self._attempts, tokens, source, (self._last_ns - self._started) // 1000,
                (self._first_ns - self._started) // 1000, finish, self._completion(), self.completed_id,
            )
        except LedgerUnavailable:
            return None

    def final_chunks(self, receipt: Receipt) -> list[bytes]:
        """The usage chunk, if the client asked for usage, carrying the receipt as an extra field."""
        if not self.request.include_usage:
            return []
        if self._usage_chunk is not None:
            chunk = dict(self._usage_chunk.obj)
        else:  # the provider sent no usage chunk: give the counted usage the record holds
            tokens_in, tokens_out = self.tokens[0], self.tokens[1]
            chunk = {**self._template, "object": "chat.completion.chunk", "choices": [],
                     "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                               "total_tokens": tokens_in + tokens_out}}
        chunk["nexus_receipt"] = receipt_fields(receipt)
        return [orjson.dumps(chunk)]


async def _confirmed(request: InferenceRequest, route: Route, attempts: list[dict[str, Any]]) -> None:
    """Wait for the key's read if it went ahead unread; _Exhausted(key_revoked) if it was revoked meanwhile.

    The upstream has answered by then, so the failure is recorded (its attempts show the call) and the
    answer withheld. At most one such call per revoked key and process: the read forgets the key.
    """
    if request.key_check is None or await request.key_check.start_reading() is not None:
        return
    raise _key_revoked(route, attempts)


def _key_revoked(route: Route, attempts: list[dict[str, Any]]) -> _Exhausted:
    """The caller's key turned out revoked after the upstream answered: recorded as a failure, answer withheld."""
    return _Exhausted(UpstreamFailure(KEY_REVOKED, "the API key was revoked while its request was in flight;"
                                      " the answer was withheld"), route, attempts, out_of_time=False)


def _attempt(number: int, d: Deployment, outcome: str, status: int | None, started_ns: int,
             detail: str | None = None) -> dict[str, Any]:
    attempt: dict[str, Any] = {"attempt": number, "deployment": d.name, "provider": d.provider, "outcome": outcome,
                               "status": status, "latency_us": (time.perf_counter_ns() - started_ns) // 1000}
    if detail:
        attempt["detail"] = detail[:200]
    return attempt


def _answer_messages(obj: Mapping[str, Any]) -> list[Any]:
    return [c.get("message") for c in obj.get("choices") or [] if isinstance(c, dict)]


def _answer_text(obj: Mapping[str, Any]) -> str:
    parts = []
    for message in _answer_messages(obj):
        if isinstance(message, dict):
            parts.append(_text_of(message.get("content")))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                parts.append(str(function.get("name") or "") + str(function.get("arguments") or ""))
    return "".join(parts)


async def _quietly_close(stream: UpstreamStream) -> None:
    try:
        await stream.aclose()
    except Exception:  # the connection is being dropped anyway
        pass
