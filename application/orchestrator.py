"""The NEXUS run: plan, route, verify by consensus, synthesise; every step an inference through the gateway.

Each model call goes through `Gateway.complete` / `open_stream` like any client request, so it gets its
InferenceRequested/Completed events, cost and receipt; its metadata carries correlation_id = run id and
causation_id = the run event that caused it. The run's own events go on `run-<run id>` (one append
each, serialised per run so concurrent subtasks cannot race on the stream's version). The graph of a
run is therefore a projection of the ledger: `graph()` rebuilds it from those streams alone.

Decisions (plan rules, voter choice, agreement) are pure, in domain/orchestration.py and
domain/consensus.py; this module loads, calls, decides through them, and appends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from application.gateway import Gateway, GatewayError, InferenceRequest, model_not_found
from application.ports import Ledger
from application.routing_table import RoutingTableService
from domain import consensus
from domain.inference import INFERENCE_STREAM_PREFIX, deadline_after
from domain.ledger import ConcurrencyError, LedgerUnavailable, NewEvent, Receipt
from domain.orchestration import (
    MAX_K,
    MAX_SUBTASKS,
    SUBTASK_KINDS,
    InvalidPlan,
    Plan,
    Subtask,
    choose_voters,
    escalation_model,
    fallback_plan,
    run_budget_s,
    run_graph,
    run_stream,
    validate_plan,
)
from domain.routing_table import model_for

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


class ContentProtector(Protocol):
    def protect(self, tenant_id: str, subject_id: str, value: Any) -> dict[str, Any]: ...


# --- the planner's output schema (checked at the edge; the plan's rules are domain.validate_plan) -----

class SubtaskSchema(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=40)
    kind: str
    prompt: str = Field(min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    k: int = Field(default=1, ge=1, le=MAX_K)


class PlanSchema(BaseModel):
    model_config = ConfigDict(extra="ignore")
    subtasks: list[SubtaskSchema] = Field(min_length=1, max_length=MAX_SUBTASKS)


PLANNER_PROMPT = (
    "You are the planner of NEXUS. Decompose the user's task into at most {max} subtasks and reply with "
    "JSON only, no prose, matching this JSON schema:\n{schema}\n"
    "kind is one of: {kinds}. depends_on lists the ids whose results a subtask needs. Set k to 3 or 5 "
    "(odd) when the subtask's answer is a fact, number or label worth verifying by several models; else 1."
)
SUBTASK_PROMPT = ("You solve one subtask of a larger task. Answer concisely. When the answer is a number, "
                  "a label or JSON, reply with that alone.")
SYNTHESIS_PROMPT = "Write the final answer to the task from the subtask results. Do not mention the subtasks."
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_plan(text: str) -> Plan:
    """The plan in a planner's reply (JSON, perhaps fenced or with prose around it); InvalidPlan otherwise."""
    found = _JSON_OBJECT.search(text or "")
    if found is None:
        raise InvalidPlan("reply", "a JSON object", (text or "")[:80])
    try:
        schema = PlanSchema.model_validate_json(found.group(0))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "reply"
        raise InvalidPlan(where, first["msg"], first.get("input") if where != "reply" else found.group(0)[:80]) from None
    return validate_plan([s.model_dump() for s in schema.subtasks])


# --- requests, results, errors --------------------------------------------------------------------

@dataclass(frozen=True)
class RunRequest:
    tenant_id: str
    key_id: str
    subject_id: str
    task: str
    planner_model: str | None = None
    synthesis_model: str | None = None
    threshold: float = consensus.DEFAULT_THRESHOLD
    timeout_s: float = 60.0
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class RunContext:
    """A run whose models exist: nothing is recorded before this is built."""

    request: RunRequest
    planner: str
    synthesiser: str
    models: list[str]  # the tenant's model names, first-configured first
    table: dict[str, str]
    default: str


@dataclass(frozen=True)
class Step:
    """One inference of the run, as recorded."""

    step: str  # plan | vote | escalation | synthesis
    subtask_id: str | None
    model: str
    request_id: str
    receipt: Receipt
    text: str

    @property
    def event_id(self) -> str:
        return str(self.receipt.event_id)

    def public(self) -> dict[str, Any]:
        r = self.receipt
        return {"step": self.step, "subtask_id": self.subtask_id, "model": self.model, "request_id": self.request_id,
                "event_id": str(r.event_id), "position": r.position, "entry_hash": r.entry_hash.hex()}


@dataclass
class SubtaskResult:
    subtask: Subtask
    answer: str
    model: str
    completed_event: str
    consensus: dict[str, Any] | None = None


@dataclass
class RunResult:
    run_id: str
    answer: str
    plan: Plan
    steps: list[Step]
    results: list[SubtaskResult]
    cost_micros: dict[str, int]
    receipt: Receipt  # of OrchestrationCompleted
    flagged: list[str]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.run_id, "object": "nexus.run", "status": "completed", "answer": self.answer,
            "plan": {"fallback": self.plan.fallback, "subtasks": self.plan.as_dicts()},
            "subtasks": [{"id": r.subtask.id, "kind": r.subtask.kind, "model": r.model, "answer": r.answer,
                          "consensus": r.consensus} for r in self.results],
            "steps": [s.public() for s in self.steps], "cost_micros": self.cost_micros, "flagged": self.flagged,
            "receipt": {"position": self.receipt.position, "event_id": str(self.receipt.event_id),
                        "entry_hash": self.receipt.entry_hash.hex()},
        }


class RunFailed(Exception):
    """The run stopped (recorded as OrchestrationFailed); `error` is what the client is told."""

    def __init__(self, run_id: str, error: GatewayError, steps: list[Step]) -> None:
        super().__init__(error.message)
        self.run_id = run_id
        self.error = error
        self.steps = steps


class _RunLog:
    """Appends to run-<id> one event at a time, in order (the expected version is the count so far)."""

    def __init__(self, ledger: Ledger, run: RunRequest) -> None:
        self._ledger = ledger
        self._run = run
        self._stream = run_stream(run.run_id)
        self._version = 0
        self._lock = asyncio.Lock()

    async def append(self, event_type: str, payload: dict[str, Any], causation_id: str) -> Receipt:
        event = NewEvent(self._stream, event_type, {"run_id": self._run.run_id, **payload},
                         tenant_id=self._run.tenant_id, event_id=uuid.uuid4(),
                         metadata={"correlation_id": self._run.run_id, "causation_id": causation_id})
        async with self._lock:
            for attempt in range(3):  # the same event id each time: a retry never records twice
                try:
                    [receipt] = await self._ledger.append_async([event], {self._stream: self._version})
                    break
                except ConcurrencyError:  # only the sweeper writes here besides us: the run was closed
                    raise LedgerUnavailable(f"run {self._run.run_id} was closed by the sweeper") from None
                except LedgerUnavailable:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
            self._version += 1
        return receipt


class Orchestrator:
    def __init__(self, ledger: Ledger, gateway: Gateway, routing: RoutingTableService,
                 privacy: ContentProtector | None = None) -> None:
        self._ledger = ledger
        self._gateway = gateway
        self._routing = routing
        self._privacy = privacy
        self.background: set[asyncio.Task[Any]] = set()  # streamed runs whose client left keep running

    # --- before anything is recorded --------------------------------------------------------------

    async def prepare(self, request: RunRequest) -> RunContext:
        """Resolve the planner and synthesis models; GatewayError 404 (nothing recorded) if one does not exist."""
        models = list(await asyncio.to_thread(self._gateway.models, request.tenant_id))
        table = await asyncio.to_thread(self._routing.table, request.tenant_id)
        if not models:
            raise model_not_found(request.planner_model or "(any)")
        default = models[0]
        planner = request.planner_model or model_for(table, "planner", default)
        synthesiser = request.synthesis_model or model_for(table, "synthesis", planner)
        for name in (planner, synthesiser):
            if name not in models:
                raise model_not_found(name)
        return RunContext(request, planner, synthesiser, models, table, default)

    # --- the run ----------------------------------------------------------------------------------

    async def run(self, ctx: RunContext, emit: Emit | None = None, *, stream_synthesis: bool = False) -> RunResult:
        req = ctx.request
        log = _RunLog(self._ledger, req)
        steps: list[Step] = []
        emit = emit or _silent
        # Past deadline_at a run with no terminal event was orphaned by a dead process: the sweeper
        # (application/inference_sweeper.py) closes it with OrchestrationFailed(gateway_interrupted).
        config = self._gateway.config
        budget = run_budget_s(req.timeout_s, config.sweep_grace_s) + config.max_stream_s  # a streamed synthesis
        requested = await log.append("OrchestrationRequested", {
            "planner_model": ctx.planner, "synthesis_model": ctx.synthesiser, "threshold": req.threshold,
            "routing_table": ctx.table, "api_key_id": req.key_id, "subject_id": req.subject_id,
            "deadline_at": deadline_after(dt.datetime.now(dt.UTC), budget),
            **await self._content(req, {"task": req.task})}, causation_id=req.run_id)
        cause = str(requested.event_id)
        try:
            plan, planned = await self._plan(ctx, log, steps, cause)
            cause = str(planned.event_id)
            await emit("plan", {"run_id": req.run_id, "fallback": plan.fallback, "subtasks": plan.as_dicts()})
            results = await self._subtasks(ctx, log, steps, plan, cause, emit)
            answer, synthesised = await self._synthesise(ctx, log, steps, plan, results, emit, stream_synthesis)
            cause = str(synthesised.event_id)
            costs = await self._costs(steps)
            flagged = [r.subtask.id for r in results if r.consensus is not None and not r.consensus["decided"]]
            done = await log.append("OrchestrationCompleted", {
                "inferences": len(steps), "cost_micros": costs, "flagged_subtasks": flagged}, causation_id=cause)
        except GatewayError as exc:
            await self._fail(log, exc, steps, cause)
            raise RunFailed(req.run_id, exc, steps) from None
        except LedgerUnavailable:
            raise RunFailed(req.run_id, GatewayError(503, "the ledger could not record this run", "api_error",
                                                     "ledger_unavailable"), steps) from None
        return RunResult(req.run_id, answer, plan, steps, results, costs, done, flagged)

    async def _fail(self, log: _RunLog, exc: GatewayError, steps: list[Step], cause: str) -> None:
        payload = {"status": exc.status, "code": exc.code, "reason": exc.message[:500], "inferences": len(steps)}
        if exc.receipt is not None:  # the failed inference's own record
            payload["failed_event_id"] = str(exc.receipt.event_id)
        try:
            await log.append("OrchestrationFailed", payload, causation_id=cause)
        except LedgerUnavailable:
            pass  # the client is told of the failure anyway; the inferences are recorded on their own

    async def _plan(self, ctx: RunContext, log: _RunLog, steps: list[Step], cause: str) -> tuple[Plan, Receipt]:
        """Ask the planner; an invalid plan is retried once with the error, then the task goes to one model."""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": PLANNER_PROMPT.format(
                max=MAX_SUBTASKS, kinds=", ".join(SUBTASK_KINDS),
                schema=orjson.dumps(PlanSchema.model_json_schema()).decode())},
            {"role": "user", "content": ctx.request.task}]
        rejected: list[dict[str, Any]] = []
        plan: Plan | None = None
        for _ in range(2):
            step = await self._infer(ctx, "plan", None, ctx.planner, messages, cause)
            steps.append(step)
            cause = step.event_id
            try:
                plan = parse_plan(step.text)
                break
            except InvalidPlan as exc:
                rejected.append({"event_id": step.event_id, "reason": str(exc)[:300]})
                messages = [*messages, {"role": "assistant", "content": step.text},
                            {"role": "user", "content": f"That plan is invalid: {exc}. Reply with the corrected JSON only."}]
        if plan is None:
            plan = fallback_plan(ctx.request.task)
        structure = [{k: v for k, v in s.as_dict().items() if k != "prompt"} for s in plan.subtasks]
        planned = await log.append("OrchestrationPlanned", {
            "planner_model": ctx.planner, "fallback": plan.fallback, "subtasks": structure, "rejected": rejected,
            "inputs": [s.event_id for s in steps],
            **await self._content(ctx.request, {"prompts": {s.id: s.prompt for s in plan.subtasks}})},
            causation_id=cause)
        return plan, planned

    async def _subtasks(self, ctx: RunContext, log: _RunLog, steps: list[Step], plan: Plan, cause: str,
                        emit: Emit) -> list[SubtaskResult]:
        """Every subtask as its own task; each waits for its dependencies only, so independent ones overlap."""
        tasks: dict[str, asyncio.Task[SubtaskResult]] = {}

        async def one(subtask: Subtask) -> SubtaskResult:
            deps = [await tasks[d] for d in subtask.depends_on]
            return await self._subtask(ctx, log, steps, subtask, deps, cause, emit)

        for subtask in plan.subtasks:  # topological order: a dependency's task exists before its dependents'
            tasks[subtask.id] = asyncio.ensure_future(one(subtask))
        try:
            return list(await asyncio.gather(*tasks.values()))
        except BaseException:
            for t in tasks.values():
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise

    async def _subtask(self, ctx: RunContext, log: _RunLog, steps: list[Step], subtask: Subtask,
                       deps: Sequence[SubtaskResult], cause: str, emit: Emit) -> SubtaskResult:
        req = ctx.request
        routed_model = model_for(ctx.table, subtask.kind, ctx.default)
        primary = routed_model if routed_model in ctx.models else ctx.default  # a table entry without deployments
        voters = choose_voters(primary, ctx.models, subtask.k)
        routed = await log.append("SubtaskRouted", {
            "subtask_id": subtask.id, "kind": subtask.kind, "model": primary, "voters": voters, "k": subtask.k,
            "depends_on": list(subtask.depends_on), "inputs": [d.completed_event for d in deps],
            "routing_fallback": None if primary == routed_model else f"{routed_model!r} has no deployment"},
            causation_id=cause)
        await emit("subtask.started", {"id": subtask.id, "kind": subtask.kind, "model": primary, "voters": voters})
        context = "".join(f"[{d.subtask.id}] {d.answer}\n" for d in deps)
        user = f"Task: {req.task}\n\n" + (f"Results you can use:\n{context}\n" if context else "") + \
            f"Subtask: {subtask.prompt}"
        messages = [{"role": "system", "content": SUBTASK_PROMPT}, {"role": "user", "content": user}]
        votes = list(await asyncio.gather(*[
            self._infer(ctx, "vote", subtask.id, m, messages, str(routed.event_id)) for m in voters]))
        steps.extend(votes)
        verdict_payload: dict[str, Any] | None = None
        if subtask.k == 1:
            answer, model, source = votes[0].text, votes[0].model, votes[0].event_id
        else:
            verdict = consensus.decide([v.text for v in votes], req.threshold)
            escalated = False
            consensus_cause = str(routed.event_id)
            if not verdict.decided:  # a tie or a plurality: one more voter, a model not yet asked if there is one
                escalation = await log.append("ConsensusEscalated", {
                    "subtask_id": subtask.id, **_verdict_fields(verdict, votes)}, causation_id=consensus_cause)
                consensus_cause = str(escalation.event_id)
                extra = await self._infer(ctx, "escalation", subtask.id,
                                          escalation_model(primary, ctx.models, voters), messages, consensus_cause)
                steps.append(extra)
                votes.append(extra)
                verdict = consensus.decide([v.text for v in votes], req.threshold)
                escalated = True
            verdict_payload = {"subtask_id": subtask.id, **_verdict_fields(verdict, votes), "escalated": escalated,
                               "threshold": req.threshold}
            event_type = "ConsensusReached" if verdict.decided else "ConsensusFailed"
            decided = await log.append(event_type, verdict_payload, causation_id=consensus_cause)
            winner = votes[verdict.winner]
            answer, model, source = winner.text, winner.model, str(decided.event_id)
            await emit("consensus", {"id": subtask.id, **{k: verdict_payload[k] for k in (
                "mode", "score", "cluster_sizes", "decided", "tie", "escalated")}, "event": event_type})
        completed = await log.append("SubtaskCompleted", {
            "subtask_id": subtask.id, "kind": subtask.kind, "model": model,
            "flagged": verdict_payload is not None and not verdict_payload["decided"],
            "inputs": [v.event_id for v in votes], **await self._content(req, {"answer": answer})},
            causation_id=source)
        await emit("subtask.completed", {"id": subtask.id, "model": model, "answer": answer,
                                         "event_id": str(completed.event_id)})
        return SubtaskResult(subtask, answer, model, str(completed.event_id), verdict_payload)

    async def _synthesise(self, ctx: RunContext, log: _RunLog, steps: list[Step], plan: Plan,
                          results: list[SubtaskResult], emit: Emit, stream: bool) -> tuple[str, Receipt]:
        req = ctx.request
        inputs = [r.completed_event for r in results]
        if plan.fallback:  # the single model's answer is the answer: synthesising it again adds nothing
            [only] = results
            event = await log.append("AnswerSynthesised", {
                "model": only.model, "synthesised": False, "inputs": inputs,
                **await self._content(req, {"answer": only.answer})}, causation_id=only.completed_event)
            await emit("synthesis", {"answer": only.answer, "model": only.model})
            return only.answer, event
        listing = "".join(
            f"[{r.subtask.id}] ({r.subtask.kind}) {r.subtask.prompt}\n=> {r.answer}"
            + (" (models disagreed: unverified)" if r.consensus and not r.consensus["decided"] else "") + "\n\n"
            for r in results)
        messages = [{"role": "system", "content": SYNTHESIS_PROMPT},
                    {"role": "user", "content": f"Task: {req.task}\n\nSubtask results:\n{listing}"}]
        cause = results[-1].completed_event  # the last result, in plan order, is what the synthesis waited for
        if stream:
            step = await self._infer_streamed(ctx, ctx.synthesiser, messages, cause, emit)
        else:
            step = await self._infer(ctx, "synthesis", None, ctx.synthesiser, messages, cause)
        steps.append(step)
        event = await log.append("AnswerSynthesised", {
            "model": ctx.synthesiser, "synthesised": True, "inputs": inputs, "request_id": step.request_id,
            **await self._content(req, {"answer": step.text})}, causation_id=step.event_id)
        await emit("synthesis", {"answer": step.text, "model": ctx.synthesiser})
        return step.text, event

    # --- inferences through the gateway -----------------------------------------------------------

    def _request(self, ctx: RunContext, model: str, messages: list[dict[str, Any]], cause: str,
                 stream: bool = False) -> InferenceRequest:
        req = ctx.request
        request_id = str(uuid.uuid4())
        return InferenceRequest(
            tenant_id=req.tenant_id, key_id=req.key_id, kind="chat", model=model,
            body={"model": model, "messages": messages, "stream": stream}, stream=stream, include_usage=False,
            timeout_s=req.timeout_s, subject_id=req.subject_id, request_id=request_id,
            correlation_id=req.run_id, causation_id=cause)

    async def _infer(self, ctx: RunContext, step: str, subtask_id: str | None, model: str,
                     messages: list[dict[str, Any]], cause: str) -> Step:
        request = self._request(ctx, model, messages, cause)
        done = await self._gateway.complete(request)
        return Step(step, subtask_id, model, request.request_id, done.receipt, _message_text(done.answer.obj))

    async def _infer_streamed(self, ctx: RunContext, model: str, messages: list[dict[str, Any]], cause: str,
                              emit: Emit) -> Step:
        request = self._request(ctx, model, messages, cause, stream=True)
        live = await self._gateway.open_stream(request)
        parts: list[str] = []
        async for data in live.chunks():
            for choice in orjson.loads(data).get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if isinstance(delta, str) and delta:
                    parts.append(delta)
                    await emit("synthesis.delta", {"text": delta})
        receipt = await live.finish()
        if receipt is None:
            raise LedgerUnavailable("the synthesis stream could not be recorded")
        if live.broken is not None:
            raise GatewayError(502, f"the synthesis stream broke: {live.broken.detail}", "api_error",
                               "upstream_stream_broken", receipt)
        return Step("synthesis", None, model, request.request_id, receipt, "".join(parts))

    async def _costs(self, steps: list[Step]) -> dict[str, int]:
        """Total cost per currency, read back from the recorded InferenceCompleted events (one query)."""
        found = await asyncio.to_thread(self._ledger.find, [s.receipt.event_id for s in steps])
        costs: dict[str, int] = {}
        for e in found:
            p = orjson.loads(e.payload)
            costs[p["currency"]] = costs.get(p["currency"], 0) + p["cost_micros"]
        return costs

    async def _content(self, req: RunRequest, value: dict[str, Any]) -> dict[str, Any]:
        """Prompts and answers are personal data: sealed like the gateway's (one envelope), never plaintext."""
        privacy = self._privacy
        if privacy is None:
            return {}
        try:
            return {"content": await asyncio.to_thread(privacy.protect, req.tenant_id, req.subject_id, value)}
        except Exception:
            return {"content": {"omitted": "sealing_failed"}}

    # --- the run graph, from the ledger -------------------------------------------------------------

    def graph(self, tenant_id: str, run_id: str) -> dict[str, Any] | None:
        """The run's events and its inferences' events with their causal edges; None if not this tenant's run."""
        run_events = self._ledger.read_stream(run_stream(run_id))
        if not run_events or any(e.tenant_id != tenant_id for e in run_events):
            return None
        request_ids: list[Any] = []
        for e in run_events:  # inference outcomes are named as inputs or as causes of run events
            request_ids += orjson.loads(e.payload).get("inputs") or []
            request_ids.append(orjson.loads(e.metadata).get("causation_id"))
        # Inputs name InferenceCompleted event ids: find them, then their whole inference streams.
        outcomes = self._ledger.find([uuid.UUID(r) for r in dict.fromkeys(request_ids) if _is_uuid(r)])
        events = list(run_events)
        for outcome in outcomes:
            if outcome.tenant_id == tenant_id and outcome.stream_id.startswith(INFERENCE_STREAM_PREFIX):
                events += self._ledger.read_stream(outcome.stream_id)
        events += self._failed_inferences(run_events, tenant_id)
        unique = {e.event_id: e for e in events}
        return run_graph(run_id, [_as_dict(e) for e in unique.values()
                                  if orjson.loads(e.metadata).get("correlation_id") == run_id])

    def _failed_inferences(self, run_events: Sequence[Any], tenant_id: str) -> list[Any]:
        found = []
        for e in run_events:
            failed = orjson.loads(e.payload).get("failed_event_id")
            if failed and _is_uuid(failed):
                for outcome in self._ledger.find([uuid.UUID(failed)]):
                    if outcome.tenant_id == tenant_id:
                        found += self._ledger.read_stream(outcome.stream_id)
        return found


def _verdict_fields(verdict: consensus.Verdict, votes: Sequence[Step]) -> dict[str, Any]:
    return {"mode": verdict.mode, "score": round(verdict.score, 4), "cluster_sizes": verdict.sizes,
            "clusters": [[votes[i].model for i in c] for c in verdict.clusters], "decided": verdict.decided,
            "tie": verdict.tie, "cohesion": verdict.cohesion, "winner_model": votes[verdict.winner].model,
            "votes": [{"model": v.model, "event_id": v.event_id, "request_id": v.request_id} for v in votes]}


def _message_text(obj: dict[str, Any]) -> str:
    for choice in obj.get("choices") or []:
        content = (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError):
        return False
    return True


def _as_dict(e: Any) -> dict[str, Any]:
    return {"event_id": str(e.event_id), "type": e.type, "stream_id": e.stream_id, "position": e.position,
            "metadata": orjson.loads(e.metadata), "payload": orjson.loads(e.payload)}


async def _silent(event: str, data: dict[str, Any]) -> None:
    return None

