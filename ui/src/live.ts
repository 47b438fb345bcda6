import { useEffect, useMemo, useRef, useSyncExternalStore } from "react";
import { useSubscription } from "urql";

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

type Feed<T> = { seq: number; items: { seq: number; item: T }[] };

/**
 * A subscription whose every event is handed to `onEvent`, not only the latest: urql keeps the last result,
 * and React renders once for several events that arrive together (a replay from a position, a burst of rows).
 */
export function useFeed<T>(query: string, variables: Record<string, unknown> | undefined,
  pick: (data: any) => T | undefined, onEvent: (item: T) => void, pause = false) {
  const handle = useRef(onEvent);
  handle.current = onEvent;
  const [result] = useSubscription<any, Feed<T>>({ query, variables, pause }, (prev, data) => {
    const item = pick(data);
    const feed = prev ?? { seq: 0, items: [] };
    return item === undefined ? feed : { seq: feed.seq + 1, items: [...feed.items.slice(-199), { seq: feed.seq + 1, item }] };
  });
  const seen = useRef(0);
  useEffect(() => {
    const feed = result.data;
    if (!feed) return;
    if (feed.seq < seen.current) seen.current = 0; // a new subscription (other variables) counts from zero
    for (const { seq, item } of feed.items) if (seq > seen.current) handle.current(item);
    seen.current = feed.seq;
  }, [result.data]);
  return result;
}
