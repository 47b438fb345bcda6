// A NEXUS run as the console sees it: the progress of a streamed run (SSE events of POST /v1/nexus/runs,
// api/gateway/nexus_runs.py) and the run's graph (GET /v1/nexus/runs/{id}, domain/orchestration.run_graph)
// turned into something to draw. Pure functions only: the pages fetch, these fold and lay out.

export type PlanSubtask = { id: string; kind: string; prompt: string; depends_on: string[]; k: number };
export type Consensus = {
  mode: string; score: number; cluster_sizes: number[]; decided: boolean; tie: boolean; escalated: boolean; event: string;
};
export type SubtaskState = PlanSubtask & {
  status: "waiting" | "running" | "done"; model?: string; voters?: string[]; consensus?: Consensus; answer?: string;
};
export type Receipt = { position: number; event_id: string; entry_hash: string };
export type RunStep = {
  step: string; subtask_id: string | null; model: string; request_id: string; event_id: string; position: number; entry_hash: string;
};
export type RunDone = {
  id: string; status: string; answer: string; steps: RunStep[]; cost_micros: Record<string, number>;
  flagged: string[]; receipt: Receipt;
};
export type RunProgress = {
  runId?: string; planned: boolean; fallback: boolean; subtasks: SubtaskState[];
  synthesis: string; synthesisModel?: string; synthesised: boolean; done?: RunDone; error?: string;
};

export const emptyProgress = (runId?: string): RunProgress =>
  ({ runId, planned: false, fallback: false, subtasks: [], synthesis: "", synthesised: false });

const patch = (p: RunProgress, id: string, f: (s: SubtaskState) => SubtaskState): RunProgress =>
  ({ ...p, subtasks: p.subtasks.map((s) => (s.id === id ? f(s) : s)) });

/** Fold one SSE event of a run into its progress (event names and shapes: application/orchestrator.py). */
export function applyRunEvent(p: RunProgress, name: string, data: any): RunProgress {
  switch (name) {
    case "plan":
      return { ...p, runId: data.run_id ?? p.runId, planned: true, fallback: !!data.fallback,
        subtasks: (data.subtasks as PlanSubtask[]).map((s) => ({ ...s, status: "waiting" })) };
    case "subtask.started":
      return patch(p, data.id, (s) => ({ ...s, status: "running", model: data.model, voters: data.voters }));
    case "consensus":
      return patch(p, data.id, (s) => ({ ...s, consensus: data as Consensus }));
    case "subtask.completed":
      return patch(p, data.id, (s) => ({ ...s, status: "done", model: data.model, answer: data.answer }));
    case "synthesis.delta":
      return { ...p, synthesis: p.synthesis + (data.text ?? "") };
    case "synthesis":
      return { ...p, synthesis: data.answer ?? p.synthesis, synthesisModel: data.model, synthesised: true };
    case "done":
      return { ...p, done: data as RunDone, runId: data.id ?? p.runId };
    case "error":
      return { ...p, runId: data.run_id ?? p.runId, error: data.error?.message ?? "the run failed" };
    default:
      return p; // a newer server's event: ignored, not an error
  }
}

// --- the run graph --------------------------------------------------------------------------------

export type GraphNode = {
  event_id: string; type: string; stream_id: string; position: number; causation_id?: string | null;
  subtask_id?: string; kind?: string; model?: string; deployment?: string; score?: number; decided?: boolean;
  mode?: string; reason?: string; cost_micros?: number; currency?: string; tokens_in?: number; tokens_out?: number;
  fallback?: boolean;
};
export type RunGraph = {
  run_id: string; status: "running" | "completed" | "failed"; nodes: GraphNode[];
  edges: { from: string; to: string; kind: "caused" | "input" }[]; cost_micros: Record<string, number>; inferences: number;
};

/** One drawn box: a model call (an inference's Requested + outcome) or one of the run's decisions. */
export type MeshNode = {
  id: string; kind: "call" | "run"; label: string; detail: string; model?: string;
  state: "pending" | "ok" | "failed" | "info"; position: number; layer: number; x: number; y: number;
  tokens?: string; cost?: number; currency?: string;
};
export type MeshEdge = { from: string; to: string; kind: "caused" | "input" };
export type Mesh = { nodes: MeshNode[]; edges: MeshEdge[]; width: number; height: number; models: string[] };

const INFERENCE = "inference-";
const RUN_LABELS: Record<string, string> = {
  OrchestrationRequested: "Task", OrchestrationPlanned: "Plan", SubtaskRouted: "Subtask", ConsensusEscalated: "Escalated",
  ConsensusReached: "Consensus", ConsensusFailed: "No consensus", SubtaskCompleted: "Result", AnswerSynthesised: "Synthesis",
  OrchestrationCompleted: "Answer", OrchestrationFailed: "Failed",
};
// Why a call was made, from the run event that caused it.
const STEP_BY_CAUSE: Record<string, string> = {
  OrchestrationRequested: "plan", SubtaskRouted: "vote", ConsensusEscalated: "escalation", SubtaskCompleted: "synthesis",
};

export const COL = 140;
export const ROW = 70;
export const NODE_W = 124;
export const NODE_H = 44;

/** deployment name -> model name: inference events name the deployment and the provider's model, run events the model name. */
export type ModelNames = Record<string, string>;

/**
 * The graph with the calls still in flight: a running subtask's voters (known from the SSE progress or the
 * live SubtaskRouted event) whose calls the run has not recorded yet. The run's graph only holds the
 * inferences its events name, which happens when a subtask completes, so until then its voters show pending.
 */
export function withPending(graph: RunGraph, voters: Record<string, string[]>, names: ModelNames = {}): RunGraph {
  if (graph.status !== "running") return graph;
  const nodes = [...graph.nodes], edges = [...graph.edges];
  let position = Math.max(0, ...nodes.map((n) => n.position));
  for (const routed of graph.nodes) {
    const sid = routed.subtask_id;
    if (routed.type !== "SubtaskRouted" || !sid || !voters[sid]) continue;
    if (graph.nodes.some((n) => n.type === "SubtaskCompleted" && n.subtask_id === sid)) continue;
    const left = [...voters[sid]];
    for (const n of graph.nodes) {
      if (n.type !== "InferenceRequested" || n.causation_id !== routed.event_id) continue;
      const i = left.indexOf(names[n.deployment ?? ""] ?? n.model ?? "");
      if (i >= 0) left.splice(i, 1);
    }
    left.forEach((model, i) => {
      const id = `pending:${sid}:${i}`;
      nodes.push({ event_id: id, type: "InferenceRequested", stream_id: `inference-${id}`, position: ++position,
        causation_id: routed.event_id, model });
      edges.push({ from: routed.event_id, to: id, kind: "caused" });
    });
  }
  return { ...graph, nodes, edges };
}

/** The run's event graph with each inference's events merged into one call node, laid out in causal layers. */
export function layoutCalls(graph: RunGraph, names: ModelNames = {}): Mesh {
  const owner = new Map<string, string>(); // event id -> drawn node id
  const byId = new Map<string, MeshNode>();
  const typeOf = new Map(graph.nodes.map((n) => [n.event_id, n]));
  const models: string[] = [];
  for (const n of [...graph.nodes].sort((a, b) => a.position - b.position)) {
    const isCall = n.stream_id.startsWith(INFERENCE);
    const id = isCall ? n.stream_id : n.event_id;
    owner.set(n.event_id, id);
    let node = byId.get(id);
    if (!node) {
      node = { id, kind: isCall ? "call" : "run", label: "", detail: "", state: isCall ? "pending" : "info",
        position: n.position, layer: 0, x: 0, y: 0 };
      byId.set(id, node);
    }
    if (isCall) {
      const model = names[n.deployment ?? ""] ?? n.model;
      if (model && !node.model) {
        node.model = model;
        if (!models.includes(model)) models.push(model);
      }
      if (n.type === "InferenceRequested") {
        const cause = n.causation_id ? typeOf.get(n.causation_id) : undefined;
        const step = cause ? (cause.stream_id.startsWith(INFERENCE) ? "plan (retry)" : STEP_BY_CAUSE[cause.type] ?? "call")
          : "call";
        node.detail = cause?.subtask_id && step !== "synthesis" ? `${step} ${cause.subtask_id}` : step;
      } else if (n.type === "InferenceCompleted") {
        node.state = "ok";
        node.tokens = `${n.tokens_in ?? 0}→${n.tokens_out ?? 0} tok`;
        node.cost = n.cost_micros;
        node.currency = n.currency;
      } else if (n.type === "InferenceFailed") {
        node.state = "failed";
        node.tokens = n.reason;
      }
      node.label = node.model ?? "model";
    } else {
      node.label = RUN_LABELS[n.type] ?? n.type;
      node.state = n.type === "OrchestrationFailed" || n.type === "ConsensusFailed" ? "failed"
        : n.type === "OrchestrationCompleted" || n.type === "ConsensusReached" ? "ok" : "info";
      node.detail = [n.subtask_id, n.kind, n.score != null ? `score ${n.score}` : undefined, n.type === "OrchestrationFailed" ? n.reason : undefined]
        .filter(Boolean).join(" · ");
      if (n.model && n.type !== "SubtaskRouted") node.model = n.model;
    }
  }
  const edges: MeshEdge[] = [];
  const seen = new Set<string>();
  for (const e of graph.edges) {
    const from = owner.get(e.from), to = owner.get(e.to);
    if (!from || !to || from === to || seen.has(`${from}>${to}`)) continue;
    seen.add(`${from}>${to}`);
    edges.push({ from, to, kind: e.kind });
  }
  const nodes = [...byId.values()].sort((a, b) => a.position - b.position);
  // The synthesis call read every subtask's result, though its recorded cause is only the last in plan order
  // (metadata holds one cause; AnswerSynthesised lists them all as inputs): draw those inputs into the call.
  for (const synthesised of nodes.filter((n) => n.label === "Synthesis")) {
    const asked = edges.find((e) => e.to === synthesised.id && e.kind === "caused" && byId.get(e.from)?.kind === "call");
    if (!asked) continue;
    for (const e of edges) if (e.to === synthesised.id && e.kind === "input") e.to = asked.from;
  }
  const drawn = new Set<string>();
  edges.splice(0, edges.length, ...edges.filter((e) => {
    const key = `${e.from}>${e.to}`;
    return !drawn.has(key) && !!drawn.add(key);
  }));
  const preds = new Map<string, string[]>();
  for (const e of edges) preds.set(e.to, [...(preds.get(e.to) ?? []), e.from]);
  // Longest path from the task: causes are recorded before their effects, so position order is topological.
  for (const n of nodes) n.layer = Math.max(-1, ...(preds.get(n.id) ?? []).map((p) => byId.get(p)!.layer)) + 1;
  const layers: MeshNode[][] = [];
  for (const n of nodes) (layers[n.layer] ??= []).push(n);
  const rank = new Map<string, number>();
  for (const layer of layers) {
    if (!layer) continue;
    const mean = (n: MeshNode) => {
      const ps = (preds.get(n.id) ?? []).map((p) => rank.get(p) ?? 0);
      return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 0;
    };
    layer.sort((a, b) => mean(a) - mean(b) || a.position - b.position); // fewer crossings: follow the causes
    layer.forEach((n, i) => rank.set(n.id, i - (layer.length - 1) / 2));
  }
  // Top to bottom, one row per causal layer: a run is long and narrow, so it fits a card and a phone.
  const widest = Math.max(1, ...layers.map((l) => l?.length ?? 0));
  const width = Math.max(widest * COL, NODE_W * 2) + 32;
  for (const n of nodes) {
    n.x = width / 2 + (rank.get(n.id) ?? 0) * COL - NODE_W / 2;
    n.y = 12 + n.layer * ROW;
  }
  return { nodes, edges, width, height: 24 + Math.max(0, layers.length - 1) * ROW + NODE_H, models };
}

export type ModelNode = { id: string; label: string; calls: number; x: number; y: number; state: MeshNode["state"] };
export type ModelEdge = { from: string; to: string; calls: number; steps: string[]; pending: boolean; latest: number };
export type ModelMesh = { nodes: ModelNode[]; edges: ModelEdge[]; width: number; height: number };

/**
 * Models as nodes, calls as edges: a call to model M is an edge from the model(s) whose answers caused it
 * (walking its causation and input links back through the run's decisions) to M; calls caused by the task
 * alone start at "Task", and the run's answer is an edge from the synthesising model to "Answer".
 */
export function layoutModels(graph: RunGraph, names: ModelNames = {}): ModelMesh {
  const calls = layoutCalls(graph, names);
  const byId = new Map(calls.nodes.map((n) => [n.id, n]));
  const preds = new Map<string, string[]>(), causes = new Map<string, string[]>();
  for (const e of calls.edges) {
    preds.set(e.to, [...(preds.get(e.to) ?? []), e.from]);
    if (e.kind === "caused") causes.set(e.to, [...(causes.get(e.to) ?? []), e.from]);
  }
  // The nearest model calls upstream of `id`: through inputs too (whose answers a call was given), or only
  // through causes (who asked: the answer is the synthesising model's, not every voter's).
  const callers = (id: string, links = preds): string[] => {
    const found = new Set<string>();
    const stack = [...(links.get(id) ?? [])];
    const visited = new Set<string>();
    while (stack.length) {
      const p = stack.pop()!;
      if (visited.has(p)) continue;
      visited.add(p);
      const n = byId.get(p)!;
      if (n.kind === "call" && n.model) found.add(n.model);
      else stack.push(...(links.get(p) ?? []));
    }
    return found.size ? [...found] : ["Task"];
  };
  const edges = new Map<string, ModelEdge>();
  const count = new Map<string, number>();
  const failed = new Set<string>();
  const add = (from: string, to: string, step: string, pending: boolean, position: number) => {
    const key = `${from}>${to}`;
    const e = edges.get(key) ?? { from, to, calls: 0, steps: [], pending: false, latest: 0 };
    e.calls += 1;
    if (!e.steps.includes(step)) e.steps.push(step);
    e.pending ||= pending;
    e.latest = Math.max(e.latest, position);
    edges.set(key, e);
  };
  for (const n of calls.nodes) {
    if (n.kind === "call" && n.model) {
      count.set(n.model, (count.get(n.model) ?? 0) + 1);
      if (n.state === "failed") failed.add(n.model);
      for (const from of callers(n.id)) add(from, n.model, n.detail.split(" ")[0], n.state === "pending", n.position);
    }
    if (n.label === "Answer" || n.label === "Failed") {
      for (const from of callers(n.id, causes)) add(from, n.label, n.label === "Answer" ? "answer" : "failed", false, n.position);
    }
  }
  const ends = ["Task", ...calls.models, ...calls.nodes.filter((n) => n.label === "Answer" || n.label === "Failed").map((n) => n.label)];
  // Task on the left, the answer on the right, the models in a zigzag column between (edges stay visible).
  const m = calls.models.length;
  const width = 640, height = Math.max(220, 80 * m + 60);
  const nodes: ModelNode[] = ends.map((id, i) => {
    const isModel = i > 0 && i <= m, k = i - 1;
    return {
      id, label: id, calls: count.get(id) ?? 0,
      x: isModel ? width / 2 + (m > 2 ? (k % 2 ? 70 : -70) : 0) : id === "Task" ? 70 : width - 70,
      y: isModel && m > 1 ? 50 + (height - 100) * (k / (m - 1)) : height / 2,
      state: isModel ? (failed.has(id) ? "failed" : "ok") : id === "Failed" ? "failed" : "info",
    };
  });
  return { nodes, edges: [...edges.values()], width, height };
}

export function modelColour(models: string[], model: string | undefined): string {
  const palette = ["#4f46e5", "#0891b2", "#16a34a", "#ca8a04", "#db2777", "#7c3aed", "#ea580c", "#0d9488"];
  const i = model ? models.indexOf(model) : -1;
  return i < 0 ? "#6b7280" : palette[i % palette.length];
}
