import { useMemo, useSyncExternalStore } from "react";

/** Parse a server-sent-events body: yields [event name, data] per message (chat completions, NEXUS runs). */
export async function* sse(body: ReadableStream<Uint8Array>): AsyncGenerator<[string, string]> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut: number;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield [event, data.join("\n")];
    }
  }
}

/** Remembered per tenant and user in this browser (localStorage): who is signed in is read from `me`. */
export function storageKey(kind: string, tenant: string, subject: string): string {
  return `nexus.${kind}.${tenant}.${subject}`;
}

export function readJson<T>(key: string, fallback: T): T {
  try {
    const text = localStorage.getItem(key);
    return text ? (JSON.parse(text) as T) : fallback;
  } catch {
    return fallback; // storage disabled or a value written by another version: start afresh
  }
}

export function writeJson(key: string, value: unknown): void {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    /* full or disabled: the conversation stays in memory for this tab */
  }
}

const onNavigate = (changed: () => void) => {
  window.addEventListener("popstate", changed);
  window.addEventListener("nexus:navigate", changed);
  return () => {
    window.removeEventListener("popstate", changed);
    window.removeEventListener("nexus:navigate", changed);
  };
};

/** The current URL's query string, kept in step with the console's router (pushState + nexus:navigate). */
export function useSearch(): URLSearchParams {
  const search = useSyncExternalStore(onNavigate, () => location.search);
  return useMemo(() => new URLSearchParams(search), [search]);
}
