import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { api, HttpError } from "./auth";
import { useQuery } from "urql";
import {
  layoutCalls, layoutModels, modelColour, NODE_H, NODE_W, withPending, type MeshNode, type ModelNames, type ModelNode,
  type RunGraph,
} from "./nexus";
import { money } from "./ui";

export type MeshView = "models" | "calls";

// Drawn elements animate once when they mount (React keeps the ones already drawn), so a graph that grows
// as events arrive shows what is new; calls still waiting for an outcome pulse, and their edges flow.
const STYLE = `
.mesh-node { animation: mesh-pop .45s ease-out both; transform-box: fill-box; transform-origin: center; }
@keyframes mesh-pop { from { opacity: 0; transform: scale(.6); } to { opacity: 1; transform: scale(1); } }
.mesh-edge { animation: mesh-fade .6s ease-out both; }
@keyframes mesh-fade { from { opacity: 0; } to { opacity: 1; } }
.mesh-flow { stroke-dasharray: 6 4; animation: mesh-flow .8s linear infinite; }
@keyframes mesh-flow { to { stroke-dashoffset: -20; } }
.mesh-pending > rect, .mesh-pending > circle { animation: mesh-pulse .9s ease-in-out infinite alternate; }
@keyframes mesh-pulse { from { opacity: 1; } to { opacity: .45; } }
@media (prefers-reduced-motion: reduce) { .mesh-node, .mesh-edge, .mesh-flow, .mesh-pending > * { animation: none; } }
`;

const FILL = { ok: "#f0fdf4", failed: "#fef2f2", pending: "#fffbeb", info: "#f9fafb" } as const;
const STROKE = { ok: "#16a34a", failed: "#dc2626", pending: "#ca8a04", info: "#9ca3af" } as const;

/** The graph of one NEXUS run in SVG: models as nodes and calls as edges, or every call and decision in causal order. */
export function MeshGraph({ graph: recorded, view, voters = {} }: {
  graph: RunGraph; view: MeshView; voters?: Record<string, string[]>;
}) {
  const names = useModelNames();
  const graph = useMemo(() => withPending(recorded, voters, names), [recorded, voters, names]);
  const calls = useMemo(() => layoutCalls(graph, names), [graph, names]);
  const models = useMemo(() => layoutModels(graph, names), [graph, names]);
  const live = graph.status === "running";
  const summary = `${calls.models.length} models, ${graph.inferences} calls, ${graph.status}`;
  return (
    <div className="max-w-full overflow-x-auto">
      {view === "models" ? (
        <svg viewBox={`0 0 ${models.width} ${models.height}`} width="100%" style={{ maxWidth: models.width * 1.4, minWidth: 320 }}
          role="img" aria-label={`Models of run ${graph.run_id}: ${summary}`} data-testid="mesh-svg">
          <style>{STYLE}</style>
          <Arrows />
          {models.edges.map((e) => {
            const a = models.nodes.find((n) => n.id === e.from)!, b = models.nodes.find((n) => n.id === e.to)!;
            const d = modelEdgePath(a, b);
            return (
              <g key={`${e.from}>${e.to}`} className="mesh-edge" data-testid="mesh-edge">
                <title>{`${e.from} → ${e.to}: ${e.calls} call${e.calls > 1 ? "s" : ""} (${e.steps.join(", ")})`}</title>
                <path d={d.path} fill="none" stroke={e.pending && live ? "#ca8a04" : "#94a3b8"}
                  strokeWidth={1.5 + Math.min(4, e.calls)} markerEnd="url(#mesh-arrow)"
                  className={e.pending && live ? "mesh-flow" : undefined} />
                <text x={d.lx} y={d.ly} fontSize={11} textAnchor="middle" fill="#374151"
                  stroke="#fff" strokeWidth={3} paintOrder="stroke">
                  {e.calls > 1 ? `×${e.calls} ` : ""}{e.steps.join(", ")}
                </text>
              </g>
            );
          })}
          {models.nodes.map((n) => <ModelCircle key={n.id} node={n} colour={modelColour(calls.models, n.id)} />)}
        </svg>
      ) : (
        <svg viewBox={`0 0 ${calls.width} ${calls.height}`} width="100%" style={{ maxWidth: calls.width, minWidth: 300 }}
          role="img" aria-label={`Calls of run ${graph.run_id}: ${summary}`} data-testid="mesh-svg">
          <style>{STYLE}</style>
          <Arrows />
          {calls.edges.map((e) => {
            const a = calls.nodes.find((n) => n.id === e.from)!, b = calls.nodes.find((n) => n.id === e.to)!;
            const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2, y2 = b.y - 2;
            const bend = Math.max(18, (y2 - y1) / 2);
            const pending = live && b.state === "pending";
            return (
              <path key={`${e.from}>${e.to}`} className={pending ? "mesh-edge mesh-flow" : "mesh-edge"} data-testid="mesh-edge"
                d={`M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2}`} fill="none"
                stroke={pending ? "#ca8a04" : "#94a3b8"} strokeWidth={1.5} strokeDasharray={e.kind === "input" ? "4 3" : undefined}
                markerEnd="url(#mesh-arrow)" />
            );
          })}
          {calls.nodes.map((n) => <CallBox key={n.id} node={n} colour={modelColour(calls.models, n.model)} live={live} />)}
        </svg>
      )}
    </div>
  );
}

function Arrows() {
  return (
    <defs>
      <marker id="mesh-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse"
        orient="auto-start-reverse">
        <path d="M0,0 L10,5 L0,10 z" fill="#94a3b8" />
      </marker>
    </defs>
  );
}

const R = 30;

/** A curve from one model to another that leaves room for the reverse edge; a model calling itself loops. */
function modelEdgePath(a: ModelNode, b: ModelNode): { path: string; lx: number; ly: number } {
  if (a.id === b.id) {
    const x = a.x + R * 0.7, y = a.y - R * 0.7;
    return { path: `M${x},${y} C${x + 55},${y - 45} ${x + 55},${y + 45 + R} ${a.x + R},${a.y + 6}`, lx: x + 48, ly: y - 14 };
  }
  const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
  const ux = dx / len, uy = dy / len;
  const sx = a.x + ux * R, sy = a.y + uy * R, ex = b.x - ux * (R + 3), ey = b.y - uy * (R + 3);
  const bend = 0.18 * len; // to the right of the direction of travel, so a→b and b→a do not overlap
  const cx = (sx + ex) / 2 - uy * bend, cy = (sy + ey) / 2 + ux * bend;
  return { path: `M${sx},${sy} Q${cx},${cy} ${ex},${ey}`, lx: (sx + 2 * cx + ex) / 4, ly: (sy + 2 * cy + ey) / 4 - 4 };
}

function ModelCircle({ node, colour }: { node: ModelNode; colour: string }) {
  const isModel = node.calls > 0;
  return (
    <g className="mesh-node" data-testid={isModel ? "mesh-model" : "mesh-end"} data-model={node.id}>
      <title>{isModel ? `${node.label}: ${node.calls} call${node.calls > 1 ? "s" : ""}` : node.label}</title>
      <circle cx={node.x} cy={node.y} r={R} fill={isModel ? colour : "#fff"} stroke={isModel ? colour : STROKE[node.state]}
        strokeWidth={2} fillOpacity={isModel ? 0.14 : 1} />
      <text x={node.x} y={node.y + (isModel ? -2 : 4)} textAnchor="middle" fontSize={12} fontWeight={600} fill="#111827">
        {node.label.length > 12 ? `${node.label.slice(0, 11)}…` : node.label}
      </text>
      {isModel && <text x={node.x} y={node.y + 13} textAnchor="middle" fontSize={10} fill="#4b5563">{node.calls} call{node.calls > 1 ? "s" : ""}</text>}
    </g>
  );
}

function CallBox({ node, colour, live }: { node: MeshNode; colour: string; live: boolean }) {
  const call = node.kind === "call";
  const pending = live && node.state === "pending";
  const lines = call
    ? [node.detail, node.state === "pending" ? "waiting…" : [node.tokens, node.cost != null ? money(node.cost, node.currency) : ""].filter(Boolean).join(" · ")]
    : [node.detail];
  return (
    <g className={pending ? "mesh-node mesh-pending" : "mesh-node"} data-testid={call ? "mesh-call" : "mesh-decision"}
      data-model={node.model}>
      <title>{[node.label, ...lines].filter(Boolean).join("\n")}</title>
      <rect x={node.x} y={node.y} width={NODE_W} height={NODE_H} rx={call ? 8 : 18}
        fill={call ? FILL[node.state] : "#fff"} stroke={call ? colour : STROKE[node.state]} strokeWidth={call ? 2 : 1.2} />
      {call && <rect x={node.x} y={node.y} width={5} height={NODE_H} rx={2} fill={colour} />}
      <text x={node.x + 10} y={node.y + 16} fontSize={11.5} fontWeight={600} fill="#111827">{clip(node.label, 17)}</text>
      <text x={node.x + 10} y={node.y + 30} fontSize={9.5} fill="#4b5563">{clip(lines[0] ?? "", 22)}</text>
      {lines[1] && <text x={node.x + 10} y={node.y + 40} fontSize={8.5} fill="#6b7280">{clip(lines[1], 26)}</text>}
    </g>
  );
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

const DEPLOYMENTS = `query MeshDeployments { deployments { name modelName } }`;
const NO_NAMES: ModelNames = {};

/** Deployment -> model name, so calls are named as the run names its models (without the permission: as served). */
export function useModelNames(): ModelNames {
  const [{ data }] = useQuery({ query: DEPLOYMENTS });
  return useMemo(() => (data?.deployments
    ? Object.fromEntries(data.deployments.map((d: { name: string; modelName: string }) => [d.name, d.modelName]))
    : NO_NAMES), [data]);
}

/**
 * A run's graph from GET /v1/nexus/runs/{id}, read again every 700 ms while the run is in progress (or not
 * recorded yet: a run opened as soon as it starts may not have its first event yet, so a few 404s are waited out).
 */
export function useRunGraph(runId: string | null, follow = true) {
  const [graph, setGraph] = useState<RunGraph | null>(null);
  const [error, setError] = useState("");
  const misses = useRef(0);
  const refetch = useCallback(async () => {
    if (!runId) return;
    try {
      const g = await api<RunGraph>(`/v1/nexus/runs/${encodeURIComponent(runId)}`);
      misses.current = 0;
      setError("");
      setGraph(g);
    } catch (e) {
      if (e instanceof HttpError && e.status === 404 && ++misses.current < 8) return;
      setError((e as Error).message);
    }
  }, [runId]);
  useEffect(() => { setGraph(null); setError(""); misses.current = 0; refetch(); }, [refetch]);
  const running = follow && !!runId && !error && (!graph || graph.status === "running");
  useEffect(() => {
    if (!running) return;
    const timer = setInterval(refetch, 700);
    return () => clearInterval(timer);
  }, [running, refetch]);
  const retry = () => { misses.current = 0; setError(""); refetch(); };
  return { graph, error, refetch, retry, running };
}
