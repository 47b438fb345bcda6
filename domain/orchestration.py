"""NEXUS orchestration: the plan a planner model proposes, the rules it must satisfy, and the run's events.

A plan is a small DAG of subtasks. The planner's JSON is parsed at the edge (a pydantic schema in
application/orchestrator.py checks the shapes); the rules that need the whole plan (unique ids, known
dependencies, no cycles, bounded size and consensus) live here, pure, so they can be tested alone.

Every run's own events sit on the stream `run-<run id>`; every step is also an inference through the
gateway with metadata correlation_id = run id and causation_id = the event that caused it:

    OrchestrationRequested ─▶ planner inference(s) ─▶ OrchestrationPlanned ─▶ SubtaskRouted (one per subtask)
        ─▶ k voter inferences ─▶ [ConsensusEscalated ─▶ one more voter] ─▶ ConsensusReached | ConsensusFailed
        ─▶ SubtaskCompleted ─▶ synthesis inference ─▶ AnswerSynthesised ─▶ OrchestrationCompleted
    (any step that cannot go on ─▶ OrchestrationFailed)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RUN_STREAM_PREFIX = "run-"
SUBTASK_KINDS = ("code", "reasoning", "math", "writing", "retrieval", "general")
ROLE_KINDS = ("planner", "synthesis")
"""Routing-table entries that are not subtask kinds: which model plans, which model writes the answer."""
MAX_SUBTASKS = 8
MAX_K = 9
MAX_PROMPT_CHARS = 8000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


def run_stream(run_id: str) -> str:
    return f"{RUN_STREAM_PREFIX}{run_id}"


class InvalidPlan(ValueError):
    """A plan that breaks a rule: says where, what was expected and what was found."""

    def __init__(self, where: str, expected: str, found: object) -> None:
        super().__init__(f"plan {where}: expected {expected}, found {found!r}")
        self.where = where
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class Subtask:
    id: str
    kind: str
    prompt: str
    depends_on: tuple[str, ...] = ()
    k: int = 1  # voters; k > 1 asks for consensus

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "prompt": self.prompt, "depends_on": list(self.depends_on),
                "k": self.k}


@dataclass(frozen=True)
class Plan:
    subtasks: tuple[Subtask, ...]
    fallback: bool = False  # the planner failed twice; one general subtask answers the task directly

    def as_dicts(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.subtasks]

    def by_id(self) -> dict[str, Subtask]:
        return {s.id: s for s in self.subtasks}


def validate_plan(subtasks: Sequence[Mapping[str, Any]]) -> Plan:
    """The plan if every rule holds, else InvalidPlan naming the first broken rule."""
    if not 1 <= len(subtasks) <= MAX_SUBTASKS:
        raise InvalidPlan("subtasks", f"1 to {MAX_SUBTASKS} subtasks", len(subtasks))
    seen: dict[str, Subtask] = {}
    for n, raw in enumerate(subtasks):
        where = f"subtasks[{n}]"
        sid = raw.get("id")
        if not isinstance(sid, str) or not _ID.match(sid):
            raise InvalidPlan(f"{where}.id", "1-40 letters, digits, '_', '.', '-'", sid)
        if sid in seen:
            raise InvalidPlan(f"{where}.id", "an id used once", sid)
        kind = raw.get("kind")
        if kind not in SUBTASK_KINDS:
            raise InvalidPlan(f"{where}.kind", f"one of {', '.join(SUBTASK_KINDS)}", kind)
        prompt = raw.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidPlan(f"{where}.prompt", f"non-empty text of at most {MAX_PROMPT_CHARS} characters",
                              prompt if not isinstance(prompt, str) else f"{len(prompt)} characters")
        k = raw.get("k", 1)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise InvalidPlan(f"{where}.k", f"an integer from 1 to {MAX_K}", k)
        deps = raw.get("depends_on", [])
        if not isinstance(deps, (list, tuple)) or not all(isinstance(d, str) for d in deps):
            raise InvalidPlan(f"{where}.depends_on", "a list of subtask ids", deps)
        seen[sid] = Subtask(sid, kind, prompt.strip(), tuple(dict.fromkeys(deps)), k)
    for s in seen.values():
        for d in s.depends_on:
            if d == s.id:
                raise InvalidPlan(f"{s.id}.depends_on", "no subtask depending on itself", d)
            if d not in seen:
                raise InvalidPlan(f"{s.id}.depends_on", f"ids among {sorted(seen)}", d)
    order = topological_order(list(seen.values()))
    return Plan(tuple(order))


def topological_order(subtasks: Sequence[Subtask]) -> list[Subtask]:
    """Dependencies first, otherwise in plan order; InvalidPlan on a cycle."""
    by_id = {s.id: s for s in subtasks}
    done: dict[str, Subtask] = {}
    visiting: list[str] = []

    def visit(s: Subtask) -> None:
        if s.id in done:
            return
        if s.id in visiting:
            raise InvalidPlan("depends_on", "no cycle", " -> ".join([*visiting[visiting.index(s.id):], s.id]))
        visiting.append(s.id)
        for d in s.depends_on:
            visit(by_id[d])
        visiting.pop()
        done[s.id] = s

    for s in subtasks:
        visit(s)
    return list(done.values())


def fallback_plan(task: str) -> Plan:
    """One general subtask that is the task itself: what a run does when no valid plan came back."""
    return Plan((Subtask("answer", "general", task[:MAX_PROMPT_CHARS], (), 1),), fallback=True)


def choose_voters(primary: str, models: Sequence[str], k: int) -> list[str]:
    """k voters for one subtask: the routed model first, then the tenant's other models, then samples again.

    Distinct models first because their errors are less correlated than samples of one model.
    """
    others = [m for m in models if m != primary]
    rotation = [primary, *others]
    return [rotation[i % len(rotation)] for i in range(k)]


def escalation_model(primary: str, models: Sequence[str], used: Sequence[str]) -> str:
    """The model that breaks a disagreement: one not yet asked, else another sample of the routed model."""
    for m in [primary, *models]:
        if m not in used:
            return m
    return primary


# --- events on run-<run id> -------------------------------------------------------------------------
# Payload builders: each event is immutable once appended, carries schema_version 1 (the ledger field)
# and every fact the run graph needs, so the projection does no arithmetic beyond sums.

ORCHESTRATION_EVENTS = (
    "OrchestrationRequested", "OrchestrationPlanned", "SubtaskRouted", "ConsensusEscalated", "ConsensusReached",
    "ConsensusFailed", "SubtaskCompleted", "AnswerSynthesised", "OrchestrationCompleted", "OrchestrationFailed",
)


RUN_TERMINAL = frozenset({"OrchestrationCompleted", "OrchestrationFailed"})
RUN_INTERRUPTED = "gateway_interrupted"
# The longest chain of inferences one after another in a run: two planner attempts, each of MAX_SUBTASKS
# subtasks (a dependency chain) with its vote and one escalation, and the synthesis.
MAX_SEQUENTIAL_INFERENCES = 2 + 2 * MAX_SUBTASKS + 1


def run_budget_s(inference_timeout_s: float, grace_s: float) -> float:
    """How long a live run can take at most: its deadline (OrchestrationRequested.deadline_at) is this after its start."""
    return MAX_SEQUENTIAL_INFERENCES * (inference_timeout_s + grace_s) + grace_s


def run_interrupted(deadline: str, now_text: str, inferences: int) -> dict[str, Any]:
    """The OrchestrationFailed payload that closes a run orphaned by a dead process (past its deadline)."""
    return {"status": 503, "code": RUN_INTERRUPTED, "inferences": inferences, "swept_at": now_text,
            "reason": f"the run did not finish by its deadline {deadline}: the process running it stopped"}


def run_graph(run_id: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's graph from its recorded events (run stream + its inferences), as nodes and causal edges.

    `events` are dicts with event_id, type, stream_id, position, metadata and payload. Edges come from
    each event's causation_id, plus the explicit inputs a run event names (the votes a consensus
    weighed, the subtask results a synthesis read): a consensus has many causes, metadata holds one.
    """
    ordered = sorted(events, key=lambda e: e["position"])
    ids = {e["event_id"] for e in ordered}
    nodes, edges = [], []
    cost: dict[str, int] = {}
    for e in ordered:
        meta, payload = e.get("metadata") or {}, e.get("payload") or {}
        nodes.append({"event_id": e["event_id"], "type": e["type"], "stream_id": e["stream_id"],
                      "position": e["position"], "causation_id": meta.get("causation_id"),
                      **{k: payload[k] for k in _GRAPH_FIELDS if k in payload}})
        cause = meta.get("causation_id")
        if cause in ids:
            edges.append({"from": cause, "to": e["event_id"], "kind": "caused"})
        for ref in _inputs(payload):
            if ref in ids and ref != cause:
                edges.append({"from": ref, "to": e["event_id"], "kind": "input"})
        if e["type"] == "InferenceCompleted":
            cost[payload["currency"]] = cost.get(payload["currency"], 0) + payload["cost_micros"]
    types = [n["type"] for n in nodes]
    status = ("completed" if "OrchestrationCompleted" in types else "failed" if "OrchestrationFailed" in types
              else "running")
    return {"run_id": run_id, "status": status, "nodes": nodes, "edges": edges, "cost_micros": cost,
            "inferences": types.count("InferenceRequested")}


_GRAPH_FIELDS = ("subtask_id", "kind", "model", "deployment", "request_id", "score", "cluster_sizes", "decided",
                 "mode", "reason", "cost_micros", "currency", "tokens_in", "tokens_out", "fallback", "step")


def _inputs(payload: Mapping[str, Any]) -> list[str]:
    refs = [v.get("event_id") for v in payload.get("votes") or [] if isinstance(v, Mapping)]
    refs += [r for r in payload.get("inputs") or [] if isinstance(r, str)]
    return [r for r in refs if isinstance(r, str)]
