import { useCallback, useEffect, useMemo, useState } from "react";
import { useClient } from "urql";
import { errorText } from "../gql";
import { useFeed, useSearch } from "../live";
import { MeshGraph, useModelNames, useRunGraph, type MeshView } from "../MeshGraph";
import { layoutCalls, modelColour, type RunGraph } from "../nexus";
import { navigate } from "../router";
import { pill, Segmented, statusTone, tw } from "../controls";
import { Card, cls, Empty, ErrorBox, Loading, money, short } from "../ui";

type RunEvent = { position: number; type: string; recordedAt: string; payload: any };
type RunSummary = { id: string; at: string; status?: string; models: string[] /* deployments */ };

const RUNS = `query Runs { inferences(first: 300) { edges { node { id runId model deployment recordedAt } } } }`;
const LIVE_RUNS = `subscription LiveRuns($from: Int) {
  events(filter: {category: "run", fromPosition: $from}) { position type recordedAt payload }
}`;
const VIEWS = [["models", "Models"], ["calls", "Calls"]] as const;
const TERMINAL: Record<string, string> = { OrchestrationCompleted: "completed", OrchestrationFailed: "failed" };

/** Recent NEXUS runs: the runs named by the newest inferences of the inference log. */
function useRecentRuns() {
  const client = useClient();
  const [runs, setRuns] = useState<RunSummary[] | null>(null);
  const [error, setError] = useState("");
  const load = useCallback(async () => {
    setError("");
    const r = await client.query(RUNS, {}, { requestPolicy: "network-only" }).toPromise();
    if (r.error) { setError(errorText(r.error)); return; }
    const found = new Map<string, RunSummary>();
    for (const { node } of r.data.inferences.edges) {
      if (!node.runId || node.runId === node.id) continue; // a plain request's correlation id is its own id
      const run: RunSummary = found.get(node.runId) ?? { id: node.runId, at: node.recordedAt, models: [] };
      if (!run.models.includes(node.deployment)) run.models.push(node.deployment);
      if (node.recordedAt < run.at) run.at = node.recordedAt;
      found.set(node.runId, run);
    }
    setRuns([...found.values()].sort((a, b) => b.at.localeCompare(a.at)));
  }, [client]);
  useEffect(() => { load(); }, [load]);
  return { runs, setRuns, error, load };
}

export default function Mesh() {
  const runId = useSearch().get("run");
  const { runs, setRuns, error: runsError, load: loadRuns } = useRecentRuns();
  const names = useModelNames();
  const { graph, error, refetch: fetchGraph, retry, running } = useRunGraph(runId);
  const [view, setView] = useState<MeshView>("models");
  const [voters, setVoters] = useState<Record<string, string[]>>({}); // of the shown run's routed subtasks, from live events
  // A run opened while it runs: its events are read from its first one, so the voters already routed are known.
  const [from, setFrom] = useState<number | null>(null);
  useEffect(() => { setVoters({}); setFrom(null); }, [runId]);
  useEffect(() => {
    if (from !== null || graph?.status !== "running") return;
    const first = graph.nodes.filter((n) => n.stream_id.startsWith("run-")).map((n) => n.position);
    if (first.length) setFrom(Math.min(...first));
  }, [graph, from]);

  // Live: besides reading the graph again while the run is in progress, a run event newer than the graph
  // reads it at once (the replayed ones are in it already).
  const shownUpTo = useMemo(() => Math.max(0, ...(graph?.nodes ?? []).map((n) => n.position)), [graph]);
  const live = useFeed<RunEvent>(LIVE_RUNS, { from }, (d) => d?.events, (e) => {
    const id = e.payload?.run_id as string | undefined;
    if (!id) return;
    if (id === runId && running && e.position > shownUpTo) fetchGraph();
    if (id === runId && e.type === "SubtaskRouted") setVoters((v) => ({ ...v, [e.payload.subtask_id]: e.payload.voters }));
    setRuns((rs) => {
      if (!rs) return rs;
      const status = TERMINAL[e.type] ?? "running";
      return rs.some((r) => r.id === id) ? rs.map((r) => (r.id === id ? { ...r, status } : r))
        : [{ id, at: e.recordedAt, status, models: [] }, ...rs];
    });
  });

  return (
    <div className={cls.page}>
      <div className={tw.head}>
        <h1 className={cls.h1}>AI Mesh</h1>
        <div className={tw.bar}>
          <span className={pill(live.error ? "warn" : "ok")} title={live.error ? errorText(live.error) : "live run events"}>
            {live.error ? "live feed unavailable" : "live"}
          </span>
          <Segmented label="Graph view" options={VIEWS} value={view} onChange={setView} />
        </div>
      </div>
      <div className="flex flex-wrap items-start gap-4">
        <div className="min-w-0 flex-[1_1_260px]">
          <Card title="Recent runs" actions={<button className={cls.btnSecondary} onClick={loadRuns}>Refresh</button>}>
            {runsError && <ErrorBox message={runsError} onRetry={loadRuns} />}
            {!runs && !runsError && <Loading what="runs" />}
            {runs && !runs.length && <Empty>No NEXUS runs yet. Start one from Chat in NEXUS mode.</Empty>}
            {runs && runs.length > 0 && (
              <ul aria-label="Runs" className="m-0 grid max-h-[420px] list-none gap-1 overflow-y-auto p-0">
                {runs.map((r) => (
                  <li key={r.id}>
                    <a href={`/mesh?run=${r.id}`} aria-current={r.id === runId ? "true" : undefined} data-testid="run-link"
                      onClick={(e) => { e.preventDefault(); navigate(`/mesh?run=${r.id}`); }}
                      className={`block rounded-md px-2 py-1.5 text-ink no-underline hover:bg-gray-50 ${r.id === runId ? "bg-accent-soft" : ""}`}>
                      <code>{short(r.id, 8)}</code> <span className={tw.muted}>{new Date(r.at).toLocaleString()}</span>
                      {r.status && <span className={`${pill(statusTone(r.status))} ml-1.5`}>{r.status}</span>}
                      {r.models.length > 0 && <div className={tw.muted}>{[...new Set(r.models.map((d) => names[d] ?? d))].join(", ")}</div>}
                    </a>
                  </li>
                ))}
              </ul>
            )}
          </Card>
        </div>
        <div className="min-w-0 flex-[3_1_480px]">
          <Card title={runId ? `Run ${short(runId, 8)}` : "Run graph"}
            actions={graph && <span className={pill(statusTone(graph.status))} data-testid="run-status">{graph.status}</span>}>
            {!runId && <Empty>Pick a run from the list, or open one from a NEXUS answer in Chat.</Empty>}
            {runId && error && <ErrorBox message={error} onRetry={retry} />}
            {runId && !graph && !error && <Loading what="run graph" />}
            {graph && <RunDetails graph={graph} view={view} voters={voters} />}
          </Card>
        </div>
      </div>
    </div>
  );
}

function RunDetails({ graph, view, voters }: { graph: RunGraph; view: MeshView; voters: Record<string, string[]> }) {
  const names = useModelNames();
  const calls = useMemo(() => layoutCalls(graph, names), [graph, names]);
  const perModel = useMemo(() => calls.models.map((m) => {
    const mine = calls.nodes.filter((n) => n.kind === "call" && n.model === m);
    return { model: m, calls: mine.length, cost: mine.reduce((s, n) => s + (n.cost ?? 0), 0), currency: mine.find((n) => n.currency)?.currency };
  }), [calls]);
  const costs = Object.entries(graph.cost_micros);
  return (
    <div className="grid gap-3">
      <MeshGraph graph={graph} view={view} voters={voters} />
      <div className={`${tw.bar} text-sm`} aria-label="Legend">
        {perModel.map((m) => (
          <span key={m.model} className="inline-flex items-center gap-1">
            <span aria-hidden className="inline-block size-2.5 rounded-full" style={{ background: modelColour(calls.models, m.model) }} />
            {m.model}: {m.calls} call{m.calls > 1 ? "s" : ""}{m.currency ? `, ${money(m.cost, m.currency)}` : ""}
          </span>
        ))}
        <span className="text-muted">
          {graph.inferences} inferences · {costs.length ? costs.map(([c, v]) => money(v, c)).join(" + ") : "no cost yet"}
        </span>
      </div>
      <details>
        <summary className="cursor-pointer">Calls and decisions as a table</summary>
        <div className="overflow-x-auto">
          <table className={cls.table} aria-label="Run steps">
            <thead><tr><th>#</th><th>Step</th><th>Model / decision</th><th>Detail</th><th>State</th></tr></thead>
            <tbody>
              {calls.nodes.map((n) => (
                <tr key={n.id}>
                  <td>{n.position}</td><td>{n.kind === "call" ? n.detail : n.label}</td>
                  <td>{n.kind === "call" ? n.model : n.model ?? "–"}</td>
                  <td>{n.kind === "call" ? [n.tokens, n.cost != null ? money(n.cost, n.currency) : ""].filter(Boolean).join(" · ") : n.detail}</td>
                  <td>{n.state}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </div>
  );
}
