import type { KeyboardEvent } from "react";

// Small Tailwind class sets of the pages built after the move to Tailwind (buttons, fields, tables: ui.tsx `cls`).
type Tone = "ok" | "bad" | "warn" | "info";
const TONES: Record<Tone, string> = {
  ok: "bg-green-100 text-ok", bad: "bg-red-100 text-bad", warn: "bg-yellow-100 text-yellow-800", info: "bg-gray-100 text-gray-700",
};

/** A rounded status label. */
export const pill = (tone: Tone) => `inline-block whitespace-nowrap rounded-full px-2 py-0.5 text-xs ${TONES[tone]}`;

export const tw = {
  head: "flex flex-wrap items-center justify-between gap-3",
  bar: "flex flex-wrap items-center gap-2",
  link: "bg-transparent p-0 text-accent underline hover:text-indigo-800",
  muted: "text-sm text-muted",
  drawer: "fixed bottom-0 right-0 top-[52px] z-30 w-full max-w-xl overflow-y-auto overflow-x-hidden border-l border-line bg-white p-4 shadow-2xl",
  stats: "grid grid-cols-[repeat(auto-fill,minmax(140px,1fr))] gap-3",
};

/** A run's or an inference's status as a tone. */
export const statusTone = (status: string): Tone =>
  status === "completed" || status === "ok" ? "ok" : status === "failed" ? "bad" : "warn";

/** A choice of a few options as one row of buttons: a radio group (one tab stop, arrow keys move the choice). */
export function Segmented<T extends string>({ label, options, value, onChange, disabled }: {
  label: string; options: readonly (readonly [T, string])[]; value: T; onChange: (v: T) => void; disabled?: boolean;
}) {
  const move = (e: KeyboardEvent<HTMLDivElement>) => {
    const step = e.key === "ArrowRight" || e.key === "ArrowDown" ? 1 : e.key === "ArrowLeft" || e.key === "ArrowUp" ? -1 : 0;
    if (!step || disabled) return;
    e.preventDefault();
    const i = (options.findIndex(([v]) => v === value) + step + options.length) % options.length;
    onChange(options[i][0]);
    (e.currentTarget.children[i] as HTMLElement | undefined)?.focus();
  };
  return (
    <div role="radiogroup" aria-label={label} onKeyDown={move} className="inline-flex rounded-lg border border-line bg-white p-0.5">
      {options.map(([v, text]) => (
        <button key={v} type="button" role="radio" aria-checked={value === v} tabIndex={value === v ? 0 : -1} disabled={disabled}
          onClick={() => onChange(v)}
          className={`rounded-md px-3 py-1 text-sm disabled:opacity-50 ${value === v ? "bg-accent text-white" : "bg-transparent text-ink hover:bg-gray-50"}`}>
          {text}
        </button>
      ))}
    </div>
  );
}
