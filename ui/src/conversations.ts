// Chat conversations of the signed-in user, kept in this browser's localStorage under tenant + subject.
// The store lives outside React: a streamed answer (a NEXUS run takes a while) keeps being written to its
// conversation, and saved, while the user looks at another page, e.g. the run's mesh.
import { useEffect, useSyncExternalStore } from "react";
import { readJson, writeJson } from "./live";
import type { Receipt, RunProgress } from "./nexus";

export type Mode = "model" | "nexus";
export type Msg = {
  id: string; role: "user" | "assistant"; content: string; streaming?: boolean; error?: string;
  receipt?: Receipt; cost?: string; tokens?: string; model?: string; nexus?: RunProgress;
};
export type Conversation = { id: string; title: string; updatedAt: string; mode: Mode; messages: Msg[] };

const KEEP = 50; // conversations kept per user in this browser

const fresh = (mode: Mode): Conversation =>
  ({ id: crypto.randomUUID(), title: "New conversation", updatedAt: new Date().toISOString(), mode, messages: [] });

type State = { key: string | null; list: Conversation[]; currentId: string };
const first = fresh("model");
let state: State = { key: null, list: [first], currentId: first.id };
const listeners = new Set<() => void>();
const placeholder = fresh("model");

function set(next: State): void {
  state = next;
  if (state.key) writeJson(state.key, state.list.filter((c) => c.messages.length > 0).slice(0, KEEP));
  listeners.forEach((l) => l());
}

/** Switch to a user's conversations (on sign-in or a tenant switch); a message cut off by a closed tab says so. */
function load(key: string): void {
  if (state.key === key) return;
  const stored = readJson<Conversation[]>(key, []).map((c) => ({
    ...c, messages: c.messages.map((m) => ({ ...m, id: m.id ?? crypto.randomUUID(),
      ...(m.streaming ? { streaming: false, error: m.error ?? "interrupted" } : {}) })),
  }));
  // What was typed before the user was known belongs to this user; another user's conversations do not.
  const unsaved = state.key === null ? state.list.filter((c) => c.messages.length > 0) : [];
  const list = [...unsaved, ...stored];
  const current = list.find((c) => c.id === state.currentId) ?? list[0];
  set(list.length ? { key, list, currentId: current.id } : { key, list: [first], currentId: first.id });
}

export function updateConversation(id: string, f: (c: Conversation) => Conversation): void {
  set({ ...state, list: state.list.map((c) => (c.id === id ? { ...f(c), updatedAt: new Date().toISOString() } : c)) });
}

/** Change one message of a conversation (found by id: other messages may have been added since). */
export function patchMessage(conversationId: string, messageId: string, f: (m: Msg) => Msg): void {
  updateConversation(conversationId, (c) => ({ ...c, messages: c.messages.map((m) => (m.id === messageId ? f(m) : m)) }));
}

export function startConversation(mode: Mode): void {
  const empty = state.list.find((c) => c.messages.length === 0);
  if (empty) { set({ ...state, currentId: empty.id }); return; }
  const c = fresh(mode);
  set({ ...state, list: [c, ...state.list], currentId: c.id });
}

export function removeConversation(id: string): void {
  const rest = state.list.filter((c) => c.id !== id);
  const list = rest.length ? rest : [fresh("model")];
  set({ ...state, list, currentId: id === state.currentId ? list[0].id : state.currentId });
}

export function selectConversation(id: string): void {
  set({ ...state, currentId: id });
}

const subscribe = (l: () => void) => { listeners.add(l); return () => { listeners.delete(l); }; };

/** The conversations of `key` (tenant + subject; null while unknown: kept in memory until it is known). */
export function useConversations(key: string | null) {
  useEffect(() => { if (key) load(key); }, [key]);
  const s = useSyncExternalStore(subscribe, () => state);
  // Another user signed in on this tab: never show the previous user's conversations, even for one render.
  const list = s.key === null || s.key === key ? s.list : [placeholder];
  const current = list.find((c) => c.id === s.currentId) ?? list[0];
  return { list, current, stored: s.key !== null && s.key === key };
}
