import { useMemo, useState } from "react";
import { useQuery } from "urql";
import {
  Bar, BarChart, CartesianGrid, Legend, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis,
} from "recharts";
import { errorText } from "../gql";
import { Card, Empty, ErrorBox, Loading, money, ms } from "../ui";

const RANGES = {
  "1h": { hours: 1, granularity: "MINUTE" },
  "24h": { hours: 24, granularity: "HOUR" },
  "7d": { hours: 24 * 7, granularity: "HOUR" },
  "30d": { hours: 24 * 30, granularity: "DAY" },
} as const;
type Range = keyof typeof RANGES;

const QUERY = `
query Dashboard($g: Granularity!, $start: DateTime!, $end: DateTime!, $first: Date!, $last: Date!) {
  usageSummary(start: $start, end: $end) { requests errors tokensIn tokensOut costMicros p50Us p95Us p99Us }
  usageTimeseries(granularity: $g, start: $start, end: $end) {
    start requests errors tokensIn tokensOut costMicros p50Us p95Us p99Us
  }
  costReport(firstDay: $first, lastDay: $last) {
    lines { day provider model currency priceTableVersion requests tokensIn tokensOut costMicros }
    totals { currency costMicros }
  }
}`;

type Bucket = {
  start: string; requests: number; errors: number; tokensIn: number; tokensOut: number; costMicros: number;
  p50Us: number | null; p95Us: number | null; p99Us: number | null;
};

function window(range: Range, now: number) {
  const end = new Date(Math.ceil(now / 60000) * 60000 + 60000);
  const start = new Date(end.getTime() - RANGES[range].hours * 3600_000);
  return { g: RANGES[range].granularity, start: start.toISOString(), end: end.toISOString(),
    first: start.toISOString().slice(0, 10), last: end.toISOString().slice(0, 10) };
}

function toCsv(rows: Bucket[]): string {
  const cols = ["start", "requests", "errors", "tokensIn", "tokensOut", "costMicros", "p50Us", "p95Us", "p99Us"] as const;
  return [cols.join(","), ...rows.map((r) => cols.map((c) => r[c] ?? "").join(","))].join("\n") + "\n";
}

function download(name: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  a.click();
  URL.revokeObjectURL(url);
}

export default function Dashboard() {
  const [range, setRange] = useState<Range>("24h");
  const [now, setNow] = useState(Date.now());
  const variables = useMemo(() => window(range, now), [range, now]);
  const [{ data, fetching, error }] = useQuery({ query: QUERY, variables, requestPolicy: "network-only" });

  const series = useMemo(() => ((data?.usageTimeseries ?? []) as Bucket[]).map((b) => ({
    ...b,
    label: new Date(b.start).toLocaleString(undefined, range === "30d"
      ? { month: "short", day: "numeric" } : { hour: "2-digit", minute: "2-digit", day: range === "1h" ? undefined : "numeric" }),
    p50: b.p50Us == null ? null : b.p50Us / 1000, p95: b.p95Us == null ? null : b.p95Us / 1000,
    p99: b.p99Us == null ? null : b.p99Us / 1000, cost: b.costMicros / 1e6,
  })), [data, range]);

  const perModel = useMemo(() => {
    const by = new Map<string, { model: string; requests: number; cost: number }>();
    for (const l of data?.costReport?.lines ?? []) {
      const k = `${l.provider}/${l.model}`;
      const row = by.get(k) ?? { model: k, requests: 0, cost: 0 };
      row.requests += l.requests;
      row.cost += l.costMicros / 1e6;
      by.set(k, row);
    }
    return [...by.values()];
  }, [data]);

  const s = data?.usageSummary;
  const total = data?.costReport?.totals?.[0];
  return (
    <div className="page">
      <div className="page-head">
        <h1>Dashboard</h1>
        <div className="toolbar">
          <label htmlFor="range">Time range</label>
          <select id="range" value={range} onChange={(e) => setRange(e.target.value as Range)}>
            {Object.keys(RANGES).map((r) => <option key={r} value={r}>Last {r}</option>)}
          </select>
          <button className="secondary" onClick={() => setNow(Date.now())}>Refresh</button>
          <button className="secondary" disabled={!series.length}
            onClick={() => download(`nexus-usage-${range}.csv`, toCsv(data.usageTimeseries))}>Export CSV</button>
        </div>
      </div>
      {error && <ErrorBox message={errorText(error)} onRetry={() => setNow(Date.now())} />}
      {fetching && !data && <Loading what="usage" />}
      {s && (
        <div className="stats" aria-label="Totals">
          <Stat label="Inferences" value={String(s.requests)} />
          <Stat label="Errors" value={String(s.errors)} />
          <Stat label="Latency p50" value={ms(s.p50Us)} />
          <Stat label="Latency p95" value={ms(s.p95Us)} />
          <Stat label="Latency p99" value={ms(s.p99Us)} />
          <Stat label="Cost" value={total ? money(total.costMicros, total.currency) : money(s.costMicros)} />
          <Stat label="Tokens in / out" value={`${s.tokensIn} / ${s.tokensOut}`} />
        </div>
      )}
      {data && !series.length && <Empty>No inferences in this time range yet. Send one from Chat.</Empty>}
      {series.length > 0 && (
        <div className="grid2">
          <Card title="Inferences and errors">
            <Chart><BarChart data={series}>
              <CartesianGrid strokeDasharray="3 3" /><XAxis dataKey="label" /><YAxis allowDecimals={false} />
              <Tooltip /><Legend />
              <Bar dataKey="requests" name="inferences" fill="#4f46e5" /><Bar dataKey="errors" fill="#dc2626" />
            </BarChart></Chart>
          </Card>
          <Card title="Latency (ms)">
            <Chart><LineChart data={series}>
              <CartesianGrid strokeDasharray="3 3" /><XAxis dataKey="label" /><YAxis /><Tooltip /><Legend />
              <Line dataKey="p50" stroke="#16a34a" dot /><Line dataKey="p95" stroke="#ca8a04" dot />
              <Line dataKey="p99" stroke="#dc2626" dot />
            </LineChart></Chart>
          </Card>
          <Card title="Cost">
            <Chart><BarChart data={series}>
              <CartesianGrid strokeDasharray="3 3" /><XAxis dataKey="label" /><YAxis />
              <Tooltip formatter={(v) => Number(v).toFixed(6)} />
              <Bar dataKey="cost" name={`cost (${total?.currency ?? "USD"})`} fill="#0891b2" />
            </BarChart></Chart>
          </Card>
          <Card title="Usage per model">
            {perModel.length ? (
              <Chart><BarChart data={perModel} layout="vertical">
                <CartesianGrid strokeDasharray="3 3" /><XAxis type="number" allowDecimals={false} />
                <YAxis type="category" dataKey="model" width={150} /><Tooltip />
                <Bar dataKey="requests" name="inferences" fill="#7c3aed" />
              </BarChart></Chart>
            ) : <Empty>No cost lines in this range.</Empty>}
          </Card>
        </div>
      )}
    </div>
  );
}

function Stat({ label, value }: { label: string; value: string }) {
  return <div className="stat"><div className="stat-label">{label}</div><div className="stat-value">{value}</div></div>;
}

function Chart({ children }: { children: React.ReactElement }) {
  return <div className="chart"><ResponsiveContainer width="100%" height={220}>{children}</ResponsiveContainer></div>;
}
