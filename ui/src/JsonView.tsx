import { lazy, Suspense } from "react";

// Monaco (about 1 MB of JS) is a chunk of its own, fetched the first time a JSON view is shown.
const MonacoJson = lazy(() => import("./monaco"));

interface Props {
  value: unknown; // shown as JSON (a string is shown as it is)
  label: string; // accessible name of the view
  height?: number; // pixels
}

/** A read-only JSON view in Monaco (bundled locally, never from a CDN); plain text while Monaco loads. */
export function JsonView({ value, label, height = 280 }: Props) {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2) ?? "null";
  const fallback = (
    <pre className="m-0 overflow-auto p-3 font-mono text-xs" style={{ height }}>{text}</pre>
  );
  return (
    <div role="region" aria-label={label} data-testid="json-view" className="overflow-hidden rounded-md border border-line bg-white">
      <Suspense fallback={fallback}>
        <MonacoJson text={text} height={height} label={label} />
      </Suspense>
    </div>
  );
}
