import { useCallback, useEffect, useMemo, useState } from "react";
import { useClient, useSubscription } from "urql";
import { errorText } from "../gql";
import { navigate } from "../router";
import { Empty, ErrorBox, Loading, money, ms, short } from "../ui";

const ENTRIES = `query Log($from: Int!) {
  ledgerEntries(fromPosition: $from, limit: 500) { position eventId streamId type recordedAt payload }
}`;
const LIVE = `subscription Live { events(filter: {category: "inference"}) { position eventId streamId type recordedAt payload } }`;

type Row = { position: number; eventId: string; streamId: string; type: string; recordedAt: string; payload: any };
const SHOWN = new Set(["InferenceCompleted", "InferenceFailed"]);

export default function InferenceLog() {
  const client = useClient();
  const [rows, setRows] = useState<Row[] | null>(null);
  const [error, setError] = useState("");
  const [filter, setFilter] = useState("");
  const [selected, setSelected] = useState<Row | null>(null);

  const load = useCallback(async () => {
    setError("");
    const found: Row[] = [];
    let from = 1;
    for (let page = 0; page < 20; page++) { // history: up to 10,000 ledger entries of this tenant
      const r = await client.query(ENTRIES, { from }, { requestPolicy: "network-only" }).toPromise();
      if (r.error) { setError(errorText(r.error)); return; }
      const batch: Row[] = r.data.ledgerEntries;
      found.push(...batch.filter((e) => SHOWN.has(e.type)));
      if (batch.length < 500) break;
      from = batch[batch.length - 1].position + 1;
    }
    setRows(found.reverse());
  }, [client]);
  useEffect(() => { load(); }, [load]);

  // Live: new inference events from the `events` subscription (de-duplicated by position).
  const [live] = useSubscription({ query: LIVE });
  useEffect(() => {
    const e = live.data?.events as Row | undefined;
    if (!e || !SHOWN.has(e.type)) return;
    setRows((rs) => (rs && !rs.some((r) => r.position === e.position) ? [e, ...rs] : rs));
  }, [live.data]);

  const shown = useMemo(() => (rows ?? []).filter((r) => {
    const q = filter.toLowerCase();
    return !q || [r.type, r.payload?.model, r.payload?.provider, r.payload?.deployment, r.eventId]
      .some((v) => String(v ?? "").toLowerCase().includes(q));
  }), [rows, filter]);

  return (
    <div className="page">
      <div className="page-head">
        <h1>Inference log</h1>
        <div className="toolbar">
          <span className={live.error ? "pill warn" : "pill ok"} title={live.error ? errorText(live.error) : "live"}>
            {live.error ? "live feed unavailable" : "live"}
          </span>
          <label htmlFor="filter" className="sr-only">Filter</label>
          <input id="filter" placeholder="Filter by model, provider, status…" value={filter} onChange={(e) => setFilter(e.target.value)} />
          <button className="secondary" onClick={load}>Refresh</button>
        </div>
      </div>
      {error && <ErrorBox message={error} onRetry={load} />}
      {!rows && !error && <Loading what="inferences" />}
      {rows && !shown.length && <Empty>{rows.length ? "No inference matches the filter." : "No inferences recorded yet."}</Empty>}
      {shown.length > 0 && (
        <div className="table-wrap">
          <table aria-label="Inferences">
            <thead><tr><th>#</th><th>Time</th><th>Status</th><th>Model</th><th>Tokens</th><th>Latency</th><th>Cost</th><th /></tr></thead>
            <tbody>
              {shown.map((r) => (
                <tr key={r.position} data-testid="log-row">
                  <td>{r.position}</td>
                  <td>{new Date(r.recordedAt).toLocaleString()}</td>
                  <td><span className={r.type === "InferenceCompleted" ? "pill ok" : "pill bad"}>
                    {r.type === "InferenceCompleted" ? "ok" : r.payload?.reason ?? "failed"}</span></td>
                  <td>{r.payload?.provider}/{r.payload?.model}</td>
                  <td>{r.payload?.tokens_in ?? "–"} / {r.payload?.tokens_out ?? "–"}</td>
                  <td>{ms(r.payload?.latency_us)}</td>
                  <td>{r.payload?.cost_micros != null ? money(r.payload.cost_micros, r.payload.currency) : "–"}</td>
                  <td><button className="link" onClick={() => setSelected(r)}>Details</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {selected && (
        <aside className="drawer" role="dialog" aria-label="Inference details">
          <header className="card-head">
            <h2>Entry #{selected.position}</h2>
            <button className="secondary" onClick={() => setSelected(null)}>Close</button>
          </header>
          <p>Event <code>{short(selected.eventId, 36)}</code> on stream <code>{selected.streamId}</code></p>
          <button onClick={() => navigate(`/trust?event=${selected.eventId}`)}>Verify receipt</button>
          <pre>{JSON.stringify(selected.payload, null, 2)}</pre>
        </aside>
      )}
    </div>
  );
}
