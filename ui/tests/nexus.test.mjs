// The console's NEXUS folds (ui/src/nexus.ts) as specifications: the SSE progress of a run, and its graph
// (the shape of domain/orchestration.run_graph) as calls in causal layers and as models joined by calls.
// Run by tests/unit/test_console_nexus.py, which compiles nexus.ts and passes its path in NEXUS_JS.
import assert from "node:assert/strict";
import { test } from "node:test";

const { applyRunEvent, emptyProgress, layoutCalls, layoutModels, withPending } = await import(process.env.NEXUS_JS);

// A run of two subtasks: a (k=2: lead and math vote, consensus), b (k=1, after a), then the synthesis.
// Positions in recording order; each event names its cause, as the ledger's metadata does.
function event(position, type, stream, cause, fields = {}) {
  return { event_id: `e${position}`, type, stream_id: stream, position, causation_id: cause, ...fields };
}
const RUN = "run-r1";
const call = (id, at, cause, deployment, model, outcome = "InferenceCompleted") => [
  event(at, "InferenceRequested", `inference-${id}`, cause, { deployment, model }),
  event(at + 1, outcome, `inference-${id}`, `e${at}`, { deployment, model, tokens_in: 10, tokens_out: 2,
    cost_micros: 100, currency: "USD", ...(outcome === "InferenceFailed" ? { reason: "timeout" } : {}) }),
];
const EVENTS = [
  event(1, "OrchestrationRequested", RUN, "r1"),
  ...call("p", 2, "e1", "dep-lead", "up-lead"),
  event(4, "OrchestrationPlanned", RUN, "e3"),
  event(5, "SubtaskRouted", RUN, "e4", { subtask_id: "a", kind: "math", model: "math" }),
  ...call("v1", 6, "e5", "dep-lead", "up-lead"),
  ...call("v2", 8, "e5", "dep-math", "up-math"),
  event(10, "ConsensusReached", RUN, "e5", { subtask_id: "a", score: 1, decided: true }),
  event(11, "SubtaskCompleted", RUN, "e10", { subtask_id: "a", model: "math" }),
  // b is routed once a is done: it waits for its dependency, whose result it is given
  event(12, "SubtaskRouted", RUN, "e4", { subtask_id: "b", kind: "writing", model: "lead" }),
  ...call("v3", 13, "e12", "dep-lead", "up-lead"),
  event(15, "SubtaskCompleted", RUN, "e14", { subtask_id: "b", model: "lead" }),
  ...call("s", 16, "e15", "dep-lead", "up-lead"),
  event(18, "AnswerSynthesised", RUN, "e17", { model: "lead" }),
  event(19, "OrchestrationCompleted", RUN, "e18"),
];
const INPUTS = { e10: ["e7", "e9"], e12: ["e11"], e18: ["e11", "e15"] }; // votes weighed, results read
const NAMES = { "dep-lead": "lead", "dep-math": "math" };

function graph(events, status) {
  const ids = new Set(events.map((e) => e.event_id));
  const edges = [];
  for (const e of events) {
    if (ids.has(e.causation_id)) edges.push({ from: e.causation_id, to: e.event_id, kind: "caused" });
    for (const ref of INPUTS[e.event_id] ?? []) {
      if (ids.has(ref) && ref !== e.causation_id) edges.push({ from: ref, to: e.event_id, kind: "input" });
    }
  }
  return { run_id: "r1", status, nodes: events, edges, cost_micros: { USD: 500 },
    inferences: events.filter((e) => e.type === "InferenceRequested").length };
}
const COMPLETED = graph(EVENTS, "completed");

test("each inference is one call, named by its model, with the step that asked for it", () => {
  const mesh = layoutCalls(COMPLETED, NAMES);
  const calls = mesh.nodes.filter((n) => n.kind === "call");
  assert.deepEqual(calls.map((n) => [n.model, n.detail, n.state]), [
    ["lead", "plan", "ok"], ["lead", "vote a", "ok"], ["math", "vote a", "ok"], ["lead", "vote b", "ok"],
    ["lead", "synthesis", "ok"]]);
  assert.deepEqual(mesh.models, ["lead", "math"]);
  assert.equal(mesh.nodes.length, 5 + 9); // five calls and the run's nine decisions
});

test("causes are drawn above their effects and no two boxes overlap", () => {
  const mesh = layoutCalls(COMPLETED, NAMES);
  const at = new Map(mesh.nodes.map((n) => [n.id, n]));
  for (const e of mesh.edges) assert.ok(at.get(e.from).layer < at.get(e.to).layer, `${e.from} -> ${e.to}`);
  const places = new Set(mesh.nodes.map((n) => `${n.x},${n.y}`));
  assert.equal(places.size, mesh.nodes.length);
  assert.ok(mesh.nodes.every((n) => n.x >= 0 && n.x + 124 <= mesh.width && n.y + 44 <= mesh.height));
});

test("the synthesis call reads every subtask's result, not only the one recorded as its cause", () => {
  const mesh = layoutCalls(COMPLETED, NAMES);
  const synthesis = mesh.nodes.find((n) => n.detail === "synthesis");
  const into = mesh.edges.filter((e) => e.to === synthesis.id).map((e) => [e.from, e.kind]).sort();
  assert.deepEqual(into, [["e11", "input"], ["e15", "caused"]]);
  assert.ok(!mesh.edges.some((e) => e.to === "e18" && e.kind === "input")); // drawn into the call instead
});

test("without deployment names the calls are named as served", () => {
  assert.deepEqual(layoutCalls(COMPLETED).models, ["up-lead", "up-math"]);
});

test("models are nodes and calls are edges, from whoever's answer caused the call", () => {
  const mesh = layoutModels(COMPLETED, NAMES);
  const edges = Object.fromEntries(mesh.edges.map((e) => [`${e.from}>${e.to}`, [e.calls, e.steps.join(",")]]));
  assert.deepEqual(edges, {
    "Task>lead": [1, "plan"], // the planner: asked by the task itself
    "lead>lead": [3, "vote,synthesis"], // the plan asked lead to vote on a; a's votes asked b; b's answer the synthesis
    "lead>math": [1, "vote"],
    "math>lead": [2, "vote,synthesis"], // math's answer to a fed b and the synthesis
    "lead>Answer": [1, "answer"], // the answer is the synthesiser's, not every voter's
  });
  assert.deepEqual(mesh.nodes.map((n) => [n.id, n.calls]), [["Task", 0], ["lead", 4], ["math", 1], ["Answer", 0]]);
});

test("while a subtask runs, its voters not recorded yet are calls in flight", () => {
  const upToRouting = EVENTS.filter((e) => e.position <= 7); // lead's vote for a is in, math's is not
  const running = withPending(graph(upToRouting, "running"), { a: ["lead", "math"] }, NAMES);
  const pending = layoutCalls(running, NAMES).nodes.filter((n) => n.state === "pending");
  assert.deepEqual(pending.map((n) => [n.model, n.detail]), [["math", "vote a"]]);
  const flowing = layoutModels(running, NAMES).edges.filter((e) => e.pending).map((e) => `${e.from}>${e.to}`);
  assert.deepEqual(flowing, ["lead>math"]);
});

test("a finished run or a completed subtask has nothing in flight", () => {
  assert.equal(withPending(COMPLETED, { a: ["lead", "math"] }, NAMES), COMPLETED);
  const afterA = graph(EVENTS.filter((e) => e.position <= 11), "running");
  assert.equal(withPending(afterA, { a: ["lead", "math"] }, NAMES).nodes.length, afterA.nodes.length);
});

test("a failed call and a failed run are drawn as failed", () => {
  const failed = [...EVENTS.slice(0, 1), ...call("p", 2, "e1", "dep-lead", "up-lead", "InferenceFailed"),
    event(4, "OrchestrationFailed", RUN, "e1", { reason: "every deployment failed" })];
  const mesh = layoutCalls(graph(failed, "failed"), NAMES);
  assert.deepEqual(mesh.nodes.map((n) => [n.label, n.state]), [["Task", "info"], ["lead", "failed"], ["Failed", "failed"]]);
});

test("the SSE progress of a run folds into plan, subtasks, consensus, synthesis and the receipt", () => {
  const events = [
    ["plan", { run_id: "r1", fallback: false, subtasks: [
      { id: "a", kind: "math", prompt: "6*7", depends_on: [], k: 3 }, { id: "b", kind: "writing", prompt: "say", depends_on: ["a"], k: 1 }] }],
    ["subtask.started", { id: "a", kind: "math", model: "math", voters: ["math", "lead", "alt"] }],
    ["consensus", { id: "a", mode: "exact", score: 0.6667, cluster_sizes: [2, 1], decided: true, tie: false, escalated: false,
      event: "ConsensusReached" }],
    ["subtask.completed", { id: "a", model: "math", answer: "42", event_id: "e12" }],
    ["subtask.started", { id: "b", kind: "writing", model: "lead", voters: ["lead"] }],
    ["synthesis.delta", { text: "The answer" }],
    ["synthesis.delta", { text: " is 42." }],
    ["a.newer.event", { anything: true }], // ignored, not an error
    ["synthesis", { answer: "The answer is 42.", model: "lead" }],
    ["done", { id: "r1", status: "completed", answer: "The answer is 42.", steps: [], cost_micros: { USD: 7 }, flagged: [],
      receipt: { position: 19, event_id: "e19", entry_hash: "ab" } }],
  ];
  const seen = [];
  const final = events.reduce((p, [name, data]) => {
    const next = applyRunEvent(p, name, data);
    seen.push(next.subtasks.map((s) => s.status).join(","));
    return next;
  }, emptyProgress());
  assert.deepEqual(seen.slice(0, 5), ["waiting,waiting", "running,waiting", "running,waiting", "done,waiting", "done,running"]);
  assert.equal(final.runId, "r1");
  assert.deepEqual(final.subtasks[0].consensus.cluster_sizes, [2, 1]);
  assert.equal(final.subtasks[0].answer, "42");
  assert.equal(final.synthesis, "The answer is 42.");
  assert.equal(final.synthesisModel, "lead");
  assert.equal(final.done.receipt.position, 19);
  assert.equal(applyRunEvent(emptyProgress("r2"), "error", { run_id: "r2", error: { message: "upstream down" } }).error,
    "upstream down");
});
