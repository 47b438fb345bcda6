import type { ReactNode } from "react";

export function Loading({ what }: { what: string }) {
  return <p className="muted" role="status" aria-live="polite">Loading {what}…</p>;
}
export function ErrorBox({ message, onRetry }: { message: string; onRetry?: () => void }) {
  return (
    <div className="error" role="alert">
      <strong>Error:</strong> {message}
      {onRetry && <button className="link" onClick={onRetry}>Retry</button>}
    </div>
  );
}
export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}
export function Card({ title, children, actions }: { title: string; children: ReactNode; actions?: ReactNode }) {
  return (
    <section className="card" aria-label={title}>
      <header className="card-head"><h2>{title}</h2>{actions}</header>
      {children}
    </section>
  );
}
export const money = (micros: number, currency = "USD") =>
  `${(micros / 1e6).toLocaleString(undefined, { minimumFractionDigits: 4, maximumFractionDigits: 6 })} ${currency}`;
export const ms = (us: number | null | undefined) => (us == null ? "–" : `${(us / 1000).toFixed(1)} ms`);
export const short = (s: string, n = 10) => (s.length > n ? `${s.slice(0, n)}…` : s);
