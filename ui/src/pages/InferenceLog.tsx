import { useCallback, useEffect, useMemo, useState } from "react";
import { useClient, useQuery } from "urql";
import { errorText } from "../gql";
import { useFeed } from "../live";
import { navigate } from "../router";
import { JsonView } from "../JsonView";
import { pill, tw } from "../controls";
import { cls, Empty, ErrorBox, Loading, money, short } from "../ui";

// The inference log read model (projections/inference_log.py): server-side filters, cursor pagination into
// history, live rows from the `inferenceLog` subscription, and a detail drawer with the ledger entry.

const FIELDS = `id eventId position status provider model deployment region tokensIn tokensOut tokensCached tokensReasoning
  costMicros currency priceVersion latencyMs ttftMs runId causationId errorReason recordedAt`;
const PAGE = 50;
const INFERENCES = `query Inferences($first: Int!, $after: String, $filter: InferenceFilter) {
  inferences(first: $first, after: $after, filter: $filter) { edges { cursor node { ${FIELDS} } } pageInfo { hasNextPage endCursor } }
}`;
const LIVE = `subscription InferenceLog($filter: InferenceFilter) { inferenceLog(filter: $filter) { ${FIELDS} } }`;
const DETAIL = `query Inference($id: ID!) { inference(id: $id) { ${FIELDS} errorDetail kind
  entry { position eventId streamId type recordedAt payload metadata entryHash chainHash } } }`;

type Inference = {
  id: string; eventId: string; position: number; status: "COMPLETED" | "FAILED"; provider: string; model: string;
  deployment: string; region: string; tokensIn: number; tokensOut: number; tokensCached: number; tokensReasoning: number;
  costMicros: number; currency: string | null; priceVersion: string | null; latencyMs: number; ttftMs: number | null;
  runId: string | null; causationId: string | null; errorReason: string | null; recordedAt: string;
};
type Filters = { model: string; provider: string; status: "" | "COMPLETED" | "FAILED"; since: string; until: string };
const NO_FILTERS: Filters = { model: "", provider: "", status: "", since: "", until: "" };

function toFilter(f: Filters): Record<string, string> | null {
  const out: Record<string, string> = {};
  if (f.model.trim()) out.model = f.model.trim();
  if (f.provider.trim()) out.provider = f.provider.trim();
  if (f.status) out.status = f.status;
  if (f.since) out.since = new Date(f.since).toISOString();
  if (f.until) out.until = new Date(f.until).toISOString();
  return Object.keys(out).length ? out : null;
}

/** A NEXUS run's inferences name the run; a plain request's correlation id is its own id. */
const nexusRun = (r: Inference) => (r.runId && r.runId !== r.id ? r.runId : null);

export default function InferenceLog() {
  const client = useClient();
  const [draft, setDraft] = useState<Filters>(NO_FILTERS);
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const [rows, setRows] = useState<Inference[] | null>(null);
  const [page, setPage] = useState<{ hasNextPage: boolean; endCursor: string | null }>({ hasNextPage: false, endCursor: null });
  const [error, setError] = useState("");
  const [loadingMore, setLoadingMore] = useState(false);
  const [selected, setSelected] = useState<string | null>(null);

  // Typing waits a moment before the server is asked again.
  useEffect(() => {
    const t = setTimeout(() => setFilters(draft), 350);
    return () => clearTimeout(t);
  }, [draft]);
  const filter = useMemo(() => toFilter(filters), [filters]);

  const fetchPage = useCallback(async (after: string | null) => {
    const r = await client.query(INFERENCES, { first: PAGE, after, filter }, { requestPolicy: "network-only" }).toPromise();
    if (r.error) throw new Error(errorText(r.error));
    return r.data.inferences as { edges: { node: Inference }[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } };
  }, [client, filter]);

  const load = useCallback(async () => {
    setError("");
    setRows(null);
    try {
      const found = await fetchPage(null);
      setRows(found.edges.map((e) => e.node));
      setPage(found.pageInfo);
    } catch (e) {
      setError((e as Error).message);
    }
  }, [fetchPage]);
  useEffect(() => { load(); }, [load]);

  const more = async () => {
    setLoadingMore(true);
    try {
      const found = await fetchPage(page.endCursor);
      setRows((rs) => {
        const have = new Set((rs ?? []).map((r) => r.id));
        return [...(rs ?? []), ...found.edges.map((e) => e.node).filter((n) => !have.has(n.id))];
      });
      setPage(found.pageInfo);
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setLoadingMore(false);
    }
  };

  // Live rows, with the same filter (a window that ends in the past gets none).
  const ended = !!filters.until && new Date(filters.until).getTime() < Date.now();
  const feed = useFeed<Inference>(LIVE, { filter }, (d) => d?.inferenceLog,
    (n) => setRows((rs) => (rs && !rs.some((r) => r.id === n.id) ? [n, ...rs] : rs)), ended);

  const models = useMemo(() => [...new Set((rows ?? []).map((r) => r.model))], [rows]);
  const providers = useMemo(() => [...new Set((rows ?? []).map((r) => r.provider))], [rows]);
  const set = (k: keyof Filters) => (e: { target: { value: string } }) => setDraft((d) => ({ ...d, [k]: e.target.value }));
  const filtered = !!filter;

  return (
    <div className={cls.page}>
      <div className={tw.head}>
        <h1 className={cls.h1}>Inference log</h1>
        <div className={tw.bar}>
          <span className={pill(feed.error ? "warn" : "ok")} data-testid="live-state"
            title={feed.error ? errorText(feed.error) : "live"}>
            {feed.error ? "live feed unavailable" : ended ? "past window" : "live"}
          </span>
          <button className={cls.btnSecondary} onClick={load}>Refresh</button>
        </div>
      </div>
      <form className={tw.bar} aria-label="Filters" onSubmit={(e) => { e.preventDefault(); setFilters(draft); }}>
        <label htmlFor="f-model" className="sr-only">Model</label>
        <input id="f-model" className={`${cls.input} w-36`} placeholder="Model" list="log-models" value={draft.model} onChange={set("model")} />
        <datalist id="log-models">{models.map((m) => <option key={m} value={m} />)}</datalist>
        <label htmlFor="f-provider" className="sr-only">Provider</label>
        <input id="f-provider" className={`${cls.input} w-28`} placeholder="Provider" list="log-providers" value={draft.provider} onChange={set("provider")} />
        <datalist id="log-providers">{providers.map((m) => <option key={m} value={m} />)}</datalist>
        <label htmlFor="f-status" className="sr-only">Status</label>
        <select id="f-status" className={cls.input} value={draft.status} onChange={set("status")}>
          <option value="">any status</option><option value="COMPLETED">completed</option><option value="FAILED">failed</option>
        </select>
        <label htmlFor="f-since" className={tw.muted}>From</label>
        <input id="f-since" className={cls.input} type="datetime-local" value={draft.since} onChange={set("since")} />
        <label htmlFor="f-until" className={tw.muted}>to</label>
        <input id="f-until" className={cls.input} type="datetime-local" value={draft.until} onChange={set("until")} />
        {filtered && <button type="button" className={cls.btnSecondary} onClick={() => { setDraft(NO_FILTERS); setFilters(NO_FILTERS); }}>Clear filters</button>}
      </form>
      {error && <ErrorBox message={error} onRetry={load} />}
      {!rows && !error && <Loading what="inferences" />}
      {rows && !rows.length && <Empty>{filtered ? "No inference matches these filters." : "No inferences recorded yet."}</Empty>}
      {rows && rows.length > 0 && (
        <div className="overflow-x-auto rounded-xl border border-line bg-white">
          <table className={cls.table} aria-label="Inferences">
            <thead><tr><th>#</th><th>Time</th><th>Status</th><th>Model</th><th>Tokens</th><th>Latency</th><th>Cost</th><th /></tr></thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.id} data-testid="log-row">
                  <td>{r.position}</td>
                  <td>{new Date(r.recordedAt).toLocaleString()}</td>
                  <td><span className={pill(r.status === "COMPLETED" ? "ok" : "bad")}>
                    {r.status === "COMPLETED" ? "ok" : r.errorReason ?? "failed"}</span>
                    {nexusRun(r) && <span className={`${pill("info")} ml-1`} title="part of a NEXUS run">NEXUS</span>}</td>
                  <td>{r.provider}/{r.model}</td>
                  <td>{r.tokensIn} / {r.tokensOut}</td>
                  <td>{r.latencyMs.toFixed(1)} ms</td>
                  <td>{r.currency ? money(r.costMicros, r.currency) : "–"}</td>
                  <td><button className={tw.link} onClick={() => setSelected(r.id)} aria-label={`Details of entry ${r.position}`}>Details</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {rows && rows.length > 0 && (
        <div className={tw.bar}>
          <span className={tw.muted} data-testid="log-count">{rows.length} shown{page.hasNextPage ? ", more in history" : ", all of them"}</span>
          {page.hasNextPage && <button className={cls.btnSecondary} onClick={more} disabled={loadingMore}>{loadingMore ? "Loading…" : "Load more"}</button>}
        </div>
      )}
      {selected && <Detail id={selected} onClose={() => setSelected(null)} />}
    </div>
  );
}

function Detail({ id, onClose }: { id: string; onClose: () => void }) {
  const [{ data, fetching, error }, retry] = useQuery({ query: DETAIL, variables: { id }, requestPolicy: "network-only" });
  const r = data?.inference as (Inference & { errorDetail: string | null; kind: string | null; entry: any }) | null | undefined;
  useEffect(() => {
    const close = (e: KeyboardEvent) => { if (e.key === "Escape") onClose(); };
    window.addEventListener("keydown", close);
    return () => window.removeEventListener("keydown", close);
  }, [onClose]);
  const sealed = r?.entry?.payload?.content;
  return (
    <aside className={tw.drawer} role="dialog" aria-label="Inference details">
      <header className="mb-3 flex items-center justify-between gap-2">
        <h2 className="text-base font-semibold">{r ? `Entry #${r.position}` : "Inference"}</h2>
        <button className={cls.btnSecondary} onClick={onClose} autoFocus>Close</button>
      </header>
      {error && <ErrorBox message={errorText(error)} onRetry={() => retry({ requestPolicy: "network-only" })} />}
      {fetching && !data && <Loading what="inference" />}
      {data && !r && <Empty>This inference is not in your tenant's log.</Empty>}
      {r && (
        <div className="grid min-w-0 gap-3 [&>*]:min-w-0">
          <dl className="m-0 grid grid-cols-[max-content_minmax(0,1fr)] gap-x-3 gap-y-1 text-sm [&_dd]:m-0 [&_dd]:break-words [&_dt]:text-muted">
            <dt>Status</dt><dd>{r.status === "COMPLETED" ? "completed" : `failed: ${r.errorReason ?? ""}`}{r.errorDetail ? ` (${r.errorDetail})` : ""}</dd>
            <dt>Model</dt><dd>{r.provider}/{r.model} via <code>{r.deployment}</code>{r.region ? ` (${r.region})` : ""}</dd>
            <dt>Tokens</dt><dd>{r.tokensIn} in · {r.tokensOut} out · {r.tokensCached} cached · {r.tokensReasoning} reasoning</dd>
            <dt>Cost</dt><dd>{r.currency ? money(r.costMicros, r.currency) : "–"}{r.priceVersion ? ` (price table ${r.priceVersion})` : ""}</dd>
            <dt>Latency</dt><dd>{r.latencyMs.toFixed(1)} ms{r.ttftMs != null ? ` · first token ${r.ttftMs.toFixed(1)} ms` : ""}</dd>
            <dt>Request</dt><dd><code className="break-all">{r.id}</code></dd>
            {nexusRun(r) && <><dt>NEXUS run</dt><dd>
              <a href={`/mesh?run=${nexusRun(r)}`} className="text-accent underline" onClick={(e) => { e.preventDefault(); navigate(`/mesh?run=${nexusRun(r)}`); }}>
                {short(nexusRun(r)!, 8)} in AI Mesh</a></dd></>}
            <dt>Request / response</dt>
            <dd>{sealed ? "sealed with the data subject's key (stored, not readable here)" : "not stored"}</dd>
          </dl>
          <div><button className={cls.btn} onClick={() => navigate(`/trust?event=${r.eventId}`)}>Verify receipt</button></div>
          <section aria-label="Ledger entry" className="grid gap-1 [&>*]:min-w-0">
            <h3 className="text-sm font-semibold">Ledger entry</h3>
            {r.entry ? <div data-testid="ledger-entry"><JsonView value={r.entry} label={`Ledger entry #${r.position}`} height={360} /></div>
              : <p className={tw.muted}>Reading the ledger entry needs the ledger.read permission.</p>}
          </section>
        </div>
      )}
    </aside>
  );
}
