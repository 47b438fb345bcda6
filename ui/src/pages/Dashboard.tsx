import { useEffect, useMemo, useRef, useState, type ReactElement, type ReactNode } from "react";
import { useQuery } from "urql";
import {
  Bar, BarChart, CartesianGrid, Legend, Line, LineChart, ReferenceArea, ResponsiveContainer, Tooltip, XAxis, YAxis,
  type MouseHandlerDataParam,
} from "recharts";
import { chartSvg, downloadBlob, svgToPng } from "../chartExport";
import { useFeed } from "../live";
import { errorText } from "../gql";
import { pill, tw } from "../controls";
import { Card, cls, Empty, ErrorBox, Loading, money, ms } from "../ui";

const RANGES = { "1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30 } as const;
type Range = keyof typeof RANGES | "custom";
type Granularity = "MINUTE" | "HOUR" | "DAY";
const STEP_MS: Record<Granularity, number> = { MINUTE: 60_000, HOUR: 3_600_000, DAY: 86_400_000 };

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
// The live bucket, at most once a second while inferences are recorded (api/graphql: `metrics`).
const METRICS = `subscription Metrics($s: Int!) {
  metrics(bucketSeconds: $s) { bucketStart inferences errors p50Ms p95Ms p99Ms costMicros tokensIn tokensOut }
}`;
const LIVE_SECONDS = 10;
const LIVE_KEEP = 30; // live buckets shown: the last five minutes
const REFETCH_MS = 1500;

type Bucket = {
  start: string; requests: number; errors: number; tokensIn: number; tokensOut: number; costMicros: number;
  p50Us: number | null; p95Us: number | null; p99Us: number | null;
};
type LiveBucket = {
  bucketStart: string; inferences: number; errors: number; p50Ms: number | null; p95Ms: number | null; p99Ms: number | null;
  costMicros: number; tokensIn: number; tokensOut: number;
};
type Window = { start: number; end: number };

/** Finer buckets for shorter spans, so zooming in shows more detail (and never more than ~720 buckets). */
function granularityFor(spanMs: number): Granularity {
  return spanMs <= 12 * 3_600_000 ? "MINUTE" : spanMs <= 14 * 86_400_000 ? "HOUR" : "DAY";
}

function presetWindow(range: keyof typeof RANGES, now: number): Window {
  const end = Math.ceil(now / 60000) * 60000 + 60000;
  return { start: end - RANGES[range] * 3_600_000, end };
}

function variablesOf(w: Window) {
  const start = new Date(w.start), end = new Date(w.end);
  return { g: granularityFor(w.end - w.start), start: start.toISOString(), end: end.toISOString(),
    first: start.toISOString().slice(0, 10), last: end.toISOString().slice(0, 10) };
}

type Point = { start: string; requests: number | null; errors: number | null; cost: number | null;
  p50: number | null; p95: number | null; p99: number | null };

/** Every bucket of the window (empty ones without bars): bars line up with time and any two bound a zoom. */
function dense(rows: Bucket[], w: Window, g: Granularity): Point[] {
  const step = STEP_MS[g];
  const by = new Map(rows.map((r) => [Math.floor(Date.parse(r.start) / step) * step, r]));
  const out: Point[] = [];
  const perMs = (us: number | null) => (us == null ? null : us / 1000);
  for (let t = Math.floor(w.start / step) * step; t < w.end && out.length < 800; t += step) {
    const b = by.get(t);
    out.push(b ? { start: b.start, requests: b.requests, errors: b.errors, cost: b.costMicros / 1e6,
      p50: perMs(b.p50Us), p95: perMs(b.p95Us), p99: perMs(b.p99Us) }
      : { start: new Date(t).toISOString(), requests: null, errors: null, cost: null, p50: null, p95: null, p99: null });
  }
  return out;
}

/** The last LIVE_KEEP buckets up to the newest, quiet ones empty: the axis is time, not "buckets seen". */
function liveSeries(buckets: LiveBucket[]): { bucketStart: string; rate: number | null }[] {
  const last = Date.parse(buckets[buckets.length - 1].bucketStart);
  const by = new Map(buckets.map((b) => [Date.parse(b.bucketStart), b]));
  return Array.from({ length: LIVE_KEEP }, (_, i) => {
    const t = last - (LIVE_KEEP - 1 - i) * LIVE_SECONDS * 1000;
    const b = by.get(t);
    return { bucketStart: new Date(t).toISOString(), rate: b ? b.inferences / LIVE_SECONDS : null };
  });
}

function toCsv(rows: Bucket[]): string {
  const cols = ["start", "requests", "errors", "tokensIn", "tokensOut", "costMicros", "p50Us", "p95Us", "p99Us"] as const;
  return [cols.join(","), ...rows.map((r) => cols.map((c) => r[c] ?? "").join(","))].join("\n") + "\n";
}

const localInput = (t: number) => new Date(t - new Date(t).getTimezoneOffset() * 60000).toISOString().slice(0, 16);

export default function Dashboard() {
  const [range, setRange] = useState<Range>("24h");
  const [now, setNow] = useState(Date.now());
  const [custom, setCustom] = useState<Window | null>(null);
  const win = useMemo(() => (range === "custom" && custom ? custom : presetWindow(range === "custom" ? "24h" : range, now)),
    [range, custom, now]);
  const variables = useMemo(() => variablesOf(win), [win]);
  const g = variables.g as Granularity;
  const [{ data, fetching, error }, reexecute] = useQuery({ query: QUERY, variables, requestPolicy: "network-only" });
  // The window is rounded to the minute: within one minute the same variables must still be asked again.
  const refresh = () => { setNow(Date.now()); reexecute({ requestPolicy: "network-only" }); };

  // Live: the metrics subscription; if it is refused (no event feed in this process) the page refreshes on demand.
  const [liveBuckets, setLiveBuckets] = useState<LiveBucket[]>([]);
  const pending = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => () => { if (pending.current) clearTimeout(pending.current); }, []);
  const live = useFeed<LiveBucket>(METRICS, { s: LIVE_SECONDS }, (d) => d?.metrics, (b) => {
    setLiveBuckets((bs) => [...bs.filter((x) => x.bucketStart !== b.bucketStart), b]
      .sort((x, y) => x.bucketStart.localeCompare(y.bucketStart)).slice(-LIVE_KEEP));
    // The history (read models, which the NATS consumers update a moment after the event) is read again a
    // little later, and once more in case they lagged, when the window ends now: a zoom into the past stays put.
    if (range !== "custom" && !pending.current) {
      pending.current = setTimeout(() => {
        refresh();
        pending.current = setTimeout(() => { pending.current = null; refresh(); }, REFETCH_MS * 3);
      }, REFETCH_MS);
    }
  });
  const hasMetrics = !live.error;

  const series = useMemo(() => dense((data?.usageTimeseries ?? []) as Bucket[], win, g), [data, win, g]);
  const any = series.some((b) => b.requests != null);

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

  const zoomTo = (a: string, b: string) => {
    const [x, y] = [Date.parse(a), Date.parse(b)].sort((p, q) => p - q);
    setCustom({ start: x, end: y + STEP_MS[g] });
    setRange("custom");
  };
  const tick = (iso: string) => new Date(iso).toLocaleString(undefined, g === "DAY" ? { month: "short", day: "numeric" }
    : g === "HOUR" ? { day: "numeric", hour: "2-digit", minute: "2-digit" } : { hour: "2-digit", minute: "2-digit" });

  const s = data?.usageSummary;
  const total = data?.costReport?.totals?.[0];
  const liveNow = liveBuckets[liveBuckets.length - 1];
  return (
    <div className={cls.page}>
      <div className={tw.head}>
        <h1 className={cls.h1}>Dashboard</h1>
        <div className={tw.bar}>
          <span className={pill(hasMetrics ? "ok" : "warn")} data-testid="live-state"
            title={live.error ? errorText(live.error) : "metrics subscription"}>
            {hasMetrics ? "live" : "live updates unavailable"}
          </span>
          <label htmlFor="range" className={cls.label}>Time range</label>
          <select id="range" className={cls.input} value={range} onChange={(e) => {
            const r = e.target.value as Range;
            if (r === "custom" && !custom) setCustom(win);
            setRange(r);
          }}>
            {Object.keys(RANGES).map((r) => <option key={r} value={r}>Last {r}</option>)}
            <option value="custom">Custom</option>
          </select>
          {range === "custom" && custom && (
            <>
              <label htmlFor="from" className="sr-only">From</label>
              <input id="from" className={cls.input} type="datetime-local" value={localInput(custom.start)}
                onChange={(e) => { const t = Date.parse(e.target.value); if (t < custom.end) setCustom({ ...custom, start: t }); }} />
              <label htmlFor="to" className="sr-only">To</label>
              <input id="to" className={cls.input} type="datetime-local" value={localInput(custom.end)}
                onChange={(e) => { const t = Date.parse(e.target.value); if (t > custom.start) setCustom({ ...custom, end: t }); }} />
              <button className={cls.btnSecondary} onClick={() => { setRange("24h"); setCustom(null); }}>Reset zoom</button>
            </>
          )}
          <button className={cls.btnSecondary} onClick={refresh}>Refresh</button>
          <button className={cls.btnSecondary} disabled={!any}
            onClick={() => downloadBlob(`nexus-usage-${range}.csv`, new Blob([toCsv(data.usageTimeseries)], { type: "text/csv" }))}>
            Export CSV
          </button>
        </div>
      </div>
      {error && <ErrorBox message={errorText(error)} onRetry={refresh} />}
      {fetching && !data && <Loading what="usage" />}
      {s && (
        <div className={tw.stats} aria-label="Totals">
          <Stat label="Inferences" value={String(s.requests)} />
          <Stat label="Errors" value={String(s.errors)} />
          <Stat label="Latency p50" value={ms(s.p50Us)} />
          <Stat label="Latency p95" value={ms(s.p95Us)} />
          <Stat label="Latency p99" value={ms(s.p99Us)} />
          <Stat label="Cost" value={total ? money(total.costMicros, total.currency) : money(s.costMicros)} />
          <Stat label="Tokens in / out" value={`${s.tokensIn} / ${s.tokensOut}`} />
        </div>
      )}
      {hasMetrics && (
        <Card title="Live" actions={<span className={tw.muted}>{LIVE_SECONDS}-second buckets, last {LIVE_KEEP * LIVE_SECONDS / 60} minutes</span>}>
          {!liveBuckets.length ? (
            <Empty>Waiting for inferences: buckets appear here as they are recorded.</Empty>
          ) : (
            <>
              <div className={tw.stats} aria-label="Live totals">
                <Stat label="Inferences/s now" value={(liveNow.inferences / LIVE_SECONDS).toFixed(2)} />
                <Stat label="Live inferences" value={String(liveBuckets.reduce((n, b) => n + b.inferences, 0))} />
                <Stat label="Live errors" value={String(liveBuckets.reduce((n, b) => n + b.errors, 0))} />
                <Stat label="p95 now" value={liveNow.p95Ms == null ? "–" : `${liveNow.p95Ms.toFixed(1)} ms`} />
              </div>
              <ChartBox title="Live inferences per second">
                <BarChart data={liveSeries(liveBuckets)}>
                  <CartesianGrid strokeDasharray="3 3" />
                  <XAxis dataKey="bucketStart" tickFormatter={(v) => new Date(v).toLocaleTimeString()} />
                  <YAxis /><Tooltip labelFormatter={(v) => new Date(String(v)).toLocaleTimeString()} />
                  <Bar dataKey="rate" name="inferences/s" fill="#4f46e5" isAnimationActive={false} />
                </BarChart>
              </ChartBox>
            </>
          )}
        </Card>
      )}
      {data && !any && <Empty>No inferences in this time range yet. Send one from Chat.</Empty>}
      {any && (
        <>
          <p className={`${tw.muted} m-0`}>Drag across a chart to zoom into that time range.</p>
          <div className="grid grid-cols-1 gap-4 lg:grid-cols-2" data-granularity={g}>
            <ZoomChart title="Inferences and errors" kind="bar" series={series} tick={tick} onZoom={zoomTo} legend counts>
              <Bar dataKey="requests" name="inferences" fill="#4f46e5" /><Bar dataKey="errors" fill="#dc2626" />
            </ZoomChart>
            <ZoomChart title="Latency (ms)" kind="line" series={series} tick={tick} onZoom={zoomTo} legend>
              <Line dataKey="p50" stroke="#16a34a" dot={series.length < 80} /><Line dataKey="p95" stroke="#ca8a04" dot={series.length < 80} />
              <Line dataKey="p99" stroke="#dc2626" dot={series.length < 80} />
            </ZoomChart>
            <ZoomChart title="Cost" kind="bar" series={series} tick={tick} onZoom={zoomTo} format={(v) => Number(v).toFixed(6)}>
              <Bar dataKey="cost" name={`cost (${total?.currency ?? "USD"})`} fill="#0891b2" />
            </ZoomChart>
            {perModel.length ? (
              <ChartBox title="Usage per model" card>
                <BarChart data={perModel} layout="vertical">
                  <CartesianGrid strokeDasharray="3 3" /><XAxis type="number" allowDecimals={false} />
                  <YAxis type="category" dataKey="model" width={170} tick={{ fontSize: 12 }} /><Tooltip />
                  <Bar dataKey="requests" name="inferences" fill="#7c3aed" />
                </BarChart>
              </ChartBox>
            ) : <Card title="Usage per model"><Empty>No cost lines in this range.</Empty></Card>}
          </div>
        </>
      )}
    </div>
  );
}

function Stat({ label, value }: { label: string; value: string }) {
  return (
    <div className="rounded-xl border border-line bg-white p-3">
      <div className="text-xs text-muted">{label}</div><div className="mt-0.5 text-xl font-semibold">{value}</div>
    </div>
  );
}

/** A chart in a card (or bare) with its "Export PNG" button. */
function ChartBox({ title, children, card }: { title: string; children: ReactElement; card?: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const [failed, setFailed] = useState("");
  const exportPng = async () => {
    setFailed("");
    const svg = chartSvg(box.current);
    if (!svg) return;
    try {
      downloadBlob(`nexus-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}.png`, await svgToPng(svg, title));
    } catch (e) {
      setFailed((e as Error).message);
    }
  };
  const button = <button className={cls.btnSecondary} onClick={exportPng} aria-label={`Export ${title} as PNG`}>PNG</button>;
  const body = (
    <>
      {!card && <div className="flex justify-end">{button}</div>}
      <div ref={box} className="h-[220px] w-full [&_*:focus-visible]:outline-2 [&_*:focus-visible]:outline-accent [&_*:focus]:outline-none"><ResponsiveContainer width="100%" height={220}>{children}</ResponsiveContainer></div>
      {failed && <p className="mt-1 text-sm text-bad" role="alert">{failed}</p>}
    </>
  );
  return card ? <Card title={title} actions={button}>{body}</Card> : body;
}

/** A time chart that zooms: press, drag across buckets, release; the area being chosen is shaded meanwhile. */
function ZoomChart({ title, kind, series, tick, onZoom, legend, counts, format, children }: {
  title: string; kind: "bar" | "line"; series: Point[]; tick: (iso: string) => string; onZoom: (a: string, b: string) => void;
  legend?: boolean; counts?: boolean; format?: (v: unknown) => string; children: ReactNode;
}) {
  // Recharts calls these handlers on animation frames: the drag lives in a ref, the shaded area in state.
  const drag = useRef<{ from: string; to: string } | null>(null);
  const [area, setArea] = useState<{ from: string; to: string } | null>(null);
  const label = (s: MouseHandlerDataParam) => {
    const i = Number(s?.activeTooltipIndex);
    return Number.isInteger(i) && series[i] ? series[i].start : null;
  };
  const start = (s: MouseHandlerDataParam) => {
    const l = label(s);
    drag.current = l ? { from: l, to: l } : null;
    setArea(drag.current);
  };
  const move = (s: MouseHandlerDataParam) => {
    const l = label(s);
    if (!drag.current || !l || l === drag.current.to) return;
    drag.current = { ...drag.current, to: l };
    setArea(drag.current);
  };
  const finish = (s: MouseHandlerDataParam) => {
    const d = drag.current, end = label(s) ?? d?.to;
    drag.current = null;
    setArea(null);
    if (d && end && d.from !== end) onZoom(d.from, end);
  };
  const cancel = () => { drag.current = null; setArea(null); };
  const Chart = kind === "bar" ? BarChart : LineChart;
  return (
    <ChartBox title={title} card>
      <Chart data={series} style={{ cursor: "crosshair", userSelect: "none" }}
        onMouseDown={start} onMouseMove={move} onMouseUp={finish} onMouseLeave={cancel}>
        <CartesianGrid strokeDasharray="3 3" /><XAxis dataKey="start" tickFormatter={tick} /><YAxis allowDecimals={!counts} />
        <Tooltip labelFormatter={(v) => tick(String(v))} formatter={format} />{legend && <Legend />}
        {children}
        {area && <ReferenceArea x1={area.from} x2={area.to} strokeOpacity={0.3} fill="#6366f1" fillOpacity={0.15} />}
      </Chart>
    </ChartBox>
  );
}
