import type { ReactNode } from "react";

// Tailwind class sets shared by every page, so buttons and fields look alike everywhere.
export const cls = {
  page: "grid gap-4",
  h1: "text-xl font-semibold",
  btn: "inline-flex items-center justify-center gap-1 rounded-md bg-accent px-3.5 py-1.5 text-white hover:bg-indigo-700 "
    + "disabled:cursor-default disabled:opacity-50 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-accent",
  btnSecondary: "inline-flex items-center justify-center gap-1 rounded-md border border-line bg-white px-3.5 py-1.5 text-ink "
    + "hover:bg-gray-50 disabled:cursor-default disabled:opacity-50 focus-visible:outline-2 focus-visible:outline-accent",
  btnDanger: "inline-flex items-center rounded-md border border-red-200 bg-white px-3 py-1 text-bad hover:bg-red-50 "
    + "focus-visible:outline-2 focus-visible:outline-accent",
  input: "min-w-0 rounded-md border border-line bg-white px-2.5 py-1.5 focus-visible:outline-2 focus-visible:outline-accent",
  label: "text-sm font-medium text-gray-700",
  table: "w-full border-collapse text-sm [&_td]:whitespace-nowrap [&_td]:border-b [&_td]:border-line [&_td]:px-2 [&_td]:py-1.5 "
    + "[&_th]:border-b [&_th]:border-line [&_th]:px-2 [&_th]:py-1.5 [&_th]:text-left [&_th]:font-medium [&_th]:text-muted",
};

export function Loading({ what }: { what: string }) {
  return <p className="text-muted" role="status" aria-live="polite">Loading {what}…</p>;
}
export function ErrorBox({ message, onRetry }: { message: string; onRetry?: () => void }) {
  return (
    <div className="error my-2 rounded-md border border-red-200 bg-red-50 px-3 py-2 text-bad" role="alert">
      <strong>Error:</strong> {message}
      {onRetry && <button className="ml-2 bg-transparent p-0 text-accent underline" onClick={onRetry}>Retry</button>}
    </div>
  );
}
export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty rounded-lg border border-dashed border-line p-6 text-center text-muted">{children}</p>;
}
export function Card({ title, children, actions }: { title: string; children: ReactNode; actions?: ReactNode }) {
  return (
    <section className="min-w-0 rounded-xl border border-line bg-white p-4" aria-label={title}>
      <header className="mb-3 flex flex-wrap items-center justify-between gap-2"><h2 className="text-base font-semibold">{title}</h2>{actions}</header>
      {children}
    </section>
  );
}
export const money = (micros: number, currency = "USD") =>
  `${(micros / 1e6).toLocaleString(undefined, { minimumFractionDigits: 4, maximumFractionDigits: 6 })} ${currency}`;
export const ms = (us: number | null | undefined) => (us == null ? "–" : `${(us / 1000).toFixed(1)} ms`);
export const short = (s: string, n = 10) => (s.length > n ? `${s.slice(0, n)}…` : s);

/** Hand a blob to the browser as a download named `name`. */
export function saveBlob(name: string, blob: Blob): void {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}
