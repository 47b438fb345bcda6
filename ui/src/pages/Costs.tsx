import { useMemo, useState } from "react";
import { useQuery } from "urql";
import { errorText } from "../gql";
import { Card, cls, Empty, ErrorBox, Loading, money, saveBlob } from "../ui";

// Lines come from the `costs` read model: one per UTC day, provider, model, currency and price-table
// version, summed exactly as the InferenceCompleted events recorded them (never re-priced here).
const REPORT = `query Costs($first: Date!, $last: Date!) {
  costReport(firstDay: $first, lastDay: $last) {
    lines { day provider model currency priceTableVersion requests tokensIn tokensOut costMicros }
    totals { currency costMicros }
  }
}`;
const RANGES = [7, 30, 90];

interface Line {
  day: string;
  provider: string;
  model: string;
  currency: string;
  priceTableVersion: string;
  requests: number;
  tokensIn: number;
  tokensOut: number;
  costMicros: number;
}
interface Group {
  key: string;
  name: string;
  currency: string;
  requests: number;
  tokensIn: number;
  tokensOut: number;
  costMicros: number;
  versions: string[];
}

const isoDay = (d: Date) => d.toISOString().slice(0, 10);

const COLUMNS = ["day", "provider", "model", "currency", "priceTableVersion", "requests", "tokensIn", "tokensOut",
  "costMicros"] as const;
/** One CSV row per read-model line, costs in integer micro-units as recorded (no rounding). */
function csv(lines: Line[]): string {
  const cell = (v: string | number) => (/[",\n]/.test(String(v)) ? `"${String(v).replaceAll('"', '""')}"` : String(v));
  const header = "day,provider,model,currency,price_table_version,requests,tokens_in,tokens_out,cost_micros";
  return [header, ...lines.map((l) => COLUMNS.map((c) => cell(l[c])).join(","))].join("\n") + "\n";
}

/** Sum lines per name and currency (currencies never mix), keeping every price-table version behind a figure. */
function group(lines: Line[], name: (l: Line) => string): Group[] {
  const groups = new Map<string, Group>();
  for (const l of lines) {
    const key = `${name(l)}\u0000${l.currency}`;
    const g = groups.get(key) ?? { key, name: name(l), currency: l.currency, requests: 0, tokensIn: 0, tokensOut: 0,
      costMicros: 0, versions: [] };
    g.requests += l.requests;
    g.tokensIn += l.tokensIn;
    g.tokensOut += l.tokensOut;
    g.costMicros += l.costMicros;
    if (!g.versions.includes(l.priceTableVersion)) g.versions.push(l.priceTableVersion);
    groups.set(key, g);
  }
  return [...groups.values()].sort((a, b) => b.costMicros - a.costMicros || a.name.localeCompare(b.name));
}

export default function Costs() {
  const [days, setDays] = useState(30);
  const variables = useMemo(() => {
    const last = new Date();
    const first = new Date(last.getTime() - (days - 1) * 86_400_000);
    return { first: isoDay(first), last: isoDay(last) };
  }, [days]);
  const [{ data, fetching, error }, refetch] = useQuery({ query: REPORT, variables, requestPolicy: "network-only" });
  const lines: Line[] = data?.costReport.lines ?? [];
  const byModel = useMemo(() => group(lines, (l) => l.model), [lines]);
  const byProvider = useMemo(() => group(lines, (l) => l.provider), [lines]);
  const byDay = useMemo(() => [...lines].sort((a, b) => b.day.localeCompare(a.day) || b.costMicros - a.costMicros), [lines]);

  return (
    <div className={cls.page}>
      <div className="flex flex-wrap items-center justify-between gap-3">
        <h1 className={cls.h1}>Cost &amp; usage</h1>
        <div className="flex flex-wrap items-center gap-2">
          <label htmlFor="cost-range" className="text-sm text-muted">Range</label>
          <select id="cost-range" className={cls.input} value={days} onChange={(e) => setDays(Number(e.target.value))}>
            {RANGES.map((d) => <option key={d} value={d}>Last {d} days</option>)}
          </select>
          <button className={cls.btnSecondary} onClick={() => refetch({ requestPolicy: "network-only" })}>Refresh</button>
          <button className={cls.btnSecondary} disabled={!lines.length}
            onClick={() => saveBlob(`costs-${variables.first}-${variables.last}.csv`, new Blob([csv(lines)], { type: "text/csv" }))}>Export CSV</button>
        </div>
      </div>
      <p className="text-sm text-muted">
        {variables.first} to {variables.last} (UTC days). Every figure is what the inference was charged when it ran,
        under the price-table version shown beside it; a price change never rewrites past costs.
      </p>
      {error && <ErrorBox message={errorText(error)} onRetry={() => refetch({ requestPolicy: "network-only" })} />}
      {fetching && !data && <Loading what="costs" />}
      {data && !lines.length && <Empty>No spend in this range yet: costs appear here once inferences complete.</Empty>}
      {data && lines.length > 0 && (
        <>
          <section aria-label="Total spend" className="grid grid-cols-[repeat(auto-fill,minmax(11rem,1fr))] gap-3">
            {data.costReport.totals.map((t: { currency: string; costMicros: number }) => (
              <div key={t.currency} className="rounded-xl border border-line bg-white p-3">
                <div className="text-xs text-muted">Total spend ({t.currency})</div>
                <div className="mt-1 text-lg font-semibold" data-testid={`total-${t.currency}`}>{money(t.costMicros, t.currency)}</div>
              </div>
            ))}
            <div className="rounded-xl border border-line bg-white p-3">
              <div className="text-xs text-muted">Requests</div>
              <div className="mt-1 text-lg font-semibold">{lines.reduce((n, l) => n + l.requests, 0).toLocaleString()}</div>
            </div>
          </section>
          <div className="grid gap-4 lg:grid-cols-2">
            <GroupTable title="Spend per model" column="Model" groups={byModel} />
            <GroupTable title="Spend per provider" column="Provider" groups={byProvider} />
          </div>
          <Card title="Spend per day">
            <div className="overflow-x-auto">
              <table className={cls.table} aria-label="Spend per day">
                <thead><tr><th>Day</th><th>Provider</th><th>Model</th><th className="text-right">Requests</th>
                  <th className="text-right">Tokens in / out</th><th className="text-right">Cost</th><th>Price table</th></tr></thead>
                <tbody>{byDay.map((l) => (
                  <tr key={`${l.day}|${l.provider}|${l.model}|${l.currency}|${l.priceTableVersion}`} data-testid="cost-day-row">
                    <td>{l.day}</td><td>{l.provider}</td><td>{l.model}</td><td className="text-right">{l.requests}</td>
                    <td className="text-right">{l.tokensIn} / {l.tokensOut}</td>
                    <td className="text-right font-mono">{money(l.costMicros, l.currency)}</td>
                    <td><Version v={l.priceTableVersion} /></td>
                  </tr>
                ))}</tbody>
              </table>
            </div>
          </Card>
        </>
      )}
    </div>
  );
}

function GroupTable({ title, column, groups }: { title: string; column: string; groups: Group[] }) {
  const top = Math.max(1, ...groups.map((g) => g.costMicros));
  return (
    <Card title={title}>
      <div className="overflow-x-auto">
        <table className={cls.table} aria-label={title}>
          <thead><tr><th>{column}</th><th className="text-right">Requests</th><th className="text-right">Cost</th>
            <th>Price tables</th></tr></thead>
          <tbody>{groups.map((g) => (
            <tr key={g.key}>
              <td>
                <div>{g.name}</div>
                <div className="mt-1 h-1.5 rounded bg-accent/70" style={{ width: `${Math.max(2, (g.costMicros / top) * 100)}%` }}
                  aria-hidden="true" />
              </td>
              <td className="text-right">{g.requests}</td>
              <td className="text-right font-mono">{money(g.costMicros, g.currency)}</td>
              <td><div className="flex flex-wrap gap-1">{g.versions.map((v) => <Version key={v} v={v} />)}</div></td>
            </tr>
          ))}</tbody>
        </table>
      </div>
    </Card>
  );
}

function Version({ v }: { v: string }) {
  return <code className="rounded bg-gray-100 px-1.5 py-0.5 text-xs" title={`price-table version ${v}`}>{v}</code>;
}
