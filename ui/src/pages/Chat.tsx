import { useEffect, useRef, useState, type FormEvent } from "react";
import { useQuery } from "urql";
import { api, authHeaders } from "../auth";
import {
  patchMessage, removeConversation, selectConversation, startConversation, updateConversation, useConversations,
  type Mode, type Msg,
} from "../conversations";
import { sse, storageKey } from "../live";
import { MeshGraph, useRunGraph } from "../MeshGraph";
import { applyRunEvent, emptyProgress, type RunProgress } from "../nexus";
import { navigate } from "../router";
import { pill, Segmented, tw } from "../controls";
import { cls, Empty, ErrorBox, Loading, money, short } from "../ui";

const MODES = [["model", "Single model"], ["nexus", "NEXUS run"]] as const;
const ME = `query Me { me { tenantId subject } }`;

const costText = (costs: Record<string, number>) => Object.entries(costs).map(([c, v]) => money(v, c)).join(" + ");

export default function Chat() {
  const [models, setModels] = useState<string[] | null>(null);
  const [modelsError, setModelsError] = useState("");
  const [model, setModel] = useState("");
  const [planner, setPlanner] = useState("");
  const [input, setInput] = useState("");
  const endRef = useRef<HTMLDivElement>(null);
  const [{ data: me }] = useQuery({ query: ME });
  const convs = useConversations(me?.me ? storageKey("conversations", me.me.tenantId, me.me.subject) : null);
  const conv = convs.current;
  const mode = conv.mode;
  const messages = conv.messages;
  const busy = messages.some((m) => m.streaming); // still true when the page is left and opened again mid-answer
  // Until the signed-in identity is known, the conversations are a placeholder that its own (stored)
  // conversations replace: a choice made there (the mode, a message) would be lost, so none can be made.
  const ready = !!me?.me;

  const loadModels = () => {
    setModelsError("");
    api<{ data: { id: string }[] }>("/v1/models")
      .then((r) => { const ids = r.data.map((m) => m.id); setModels(ids); setModel((m) => m || ids[0] || ""); })
      .catch((e) => setModelsError(e.message));
  };
  useEffect(loadModels, []);
  useEffect(() => { endRef.current?.scrollIntoView?.({ block: "end" }); }, [messages]); // it may return a Promise

  const setMode = (m: Mode) => updateConversation(conv.id, (c) => ({ ...c, mode: m }));

  async function send(e: FormEvent) {
    e.preventDefault();
    if (!ready || !input.trim() || (mode === "model" && !model)) return;
    const question: Msg = { id: crypto.randomUUID(), role: "user", content: input };
    const history = [...messages.filter((m) => !m.error), question];
    const title = conv.messages.length ? conv.title : input.trim().slice(0, 60);
    const answer: Msg = mode === "nexus"
      ? { id: crypto.randomUUID(), role: "assistant", content: "", streaming: true, model: "NEXUS", nexus: emptyProgress() }
      : { id: crypto.randomUUID(), role: "assistant", content: "", streaming: true, model };
    const convId = conv.id;
    const patch = (f: (m: Msg) => Msg) => patchMessage(convId, answer.id, f);
    updateConversation(convId, (c) => ({ ...c, title, messages: [...c.messages, question, answer] }));
    setInput("");
    try {
      if (mode === "nexus") await runNexus(input, planner, patch);
      else await chatOnce(history, model, patch);
    } catch (err) {
      patch((m) => ({ ...m, streaming: false, error: (err as Error).message }));
    }
  }

  return (
    <div className="grid min-h-[calc(100vh-52px-2.5rem)] grid-rows-[auto_auto_1fr_auto] gap-3">
      <div className={tw.head}>
        <h1 className={cls.h1}>Chat</h1>
        <div className={tw.bar}>
          <Segmented label="Mode" options={MODES} value={mode} onChange={setMode} disabled={busy || !ready} />
          {mode === "model" ? (
            <>
              <label htmlFor="model" className={cls.label}>Model</label>
              <select id="model" className={cls.input} value={model} onChange={(e) => setModel(e.target.value)} disabled={!models?.length}>
                {(models ?? []).map((m) => <option key={m}>{m}</option>)}
              </select>
            </>
          ) : (
            <>
              <label htmlFor="planner" className={cls.label}>Planner</label>
              <select id="planner" className={cls.input} value={planner} onChange={(e) => setPlanner(e.target.value)} disabled={!models?.length}>
                <option value="">routing table</option>
                {(models ?? []).map((m) => <option key={m}>{m}</option>)}
              </select>
            </>
          )}
        </div>
      </div>
      <details className="rounded-xl border border-line bg-white px-3 py-2">
        <summary className="cursor-pointer">
          Conversations ({convs.list.filter((c) => c.messages.length).length})
          {!convs.stored && <span className={tw.muted}> · not saved yet</span>}
        </summary>
        <div className={`${tw.bar} mt-2`}>
          <button className={cls.btnSecondary} onClick={() => startConversation(mode)} disabled={busy}>New conversation</button>
          <span className={tw.muted}>Kept in this browser for your user and tenant.</span>
        </div>
        <ul aria-label="Conversations" className="mt-2 grid list-none gap-1 p-0">
          {convs.list.map((c) => (
            <li key={c.id} className="flex items-center gap-2">
              <button aria-current={c.id === conv.id ? "true" : undefined} onClick={() => selectConversation(c.id)} disabled={busy}
                data-testid="conversation"
                className={`min-w-0 flex-1 truncate rounded-md border px-3 py-1.5 text-left disabled:opacity-50 ${c.id === conv.id
                  ? "border-accent bg-accent-soft text-accent" : "border-line bg-white text-ink hover:bg-gray-50"}`}>
                {c.mode === "nexus" ? "⬡ " : ""}{c.title}
                <span className="text-xs opacity-70"> · {new Date(c.updatedAt).toLocaleString()}</span>
              </button>
              <button className={cls.btnDanger} aria-label={`Delete ${c.title}`} onClick={() => removeConversation(c.id)} disabled={busy}>✕</button>
            </li>
          ))}
        </ul>
      </details>
      <div className="flex min-w-0 flex-col gap-3 overflow-y-auto" aria-live="polite" aria-label="Conversation">
        {modelsError && <ErrorBox message={modelsError} onRetry={loadModels} />}
        {!models && !modelsError && <Loading what="models" />}
        {models && !models.length && <Empty>No deployments configured: add one with <code>nexus deployments add</code>.</Empty>}
        {!messages.length && models?.length ? (
          <Empty>{mode === "nexus"
            ? "Describe a task: NEXUS plans it, routes each subtask to a model, checks answers by consensus and synthesises one answer."
            : "Ask something; tokens stream as they arrive."}</Empty>
        ) : null}
        {messages.map((m) => (
          <div key={m.id} data-testid={`msg-${m.role}`} className={`min-w-0 max-w-[min(720px,92%)] rounded-xl border px-3 py-2 ${m.role === "user"
            ? "self-end border-indigo-200 bg-accent-soft" : "self-start border-line bg-white"}`}>
            <div className="mb-0.5 text-xs text-muted">{m.role === "user" ? "You" : m.model ?? model}</div>
            {m.nexus && <NexusProgress run={m.nexus} streaming={!!m.streaming} />}
            <div className="msg-text whitespace-pre-wrap break-words">
              {m.content}{m.streaming && !m.nexus && <span className="cursor animate-pulse" aria-hidden>▍</span>}
            </div>
            {m.error && <p className="mt-1 rounded-md border border-red-200 bg-red-50 px-2 py-1 text-sm text-bad" role="alert">{m.error}</p>}
            {m.role === "assistant" && !m.streaming && !m.error && (
              <div className="mt-1.5 flex flex-wrap items-center gap-3 text-xs text-muted">
                {m.tokens && <span>{m.tokens}</span>}
                {m.cost && <span data-testid="cost">cost {m.cost}</span>}
                {m.receipt && (
                  <button className={`${pill("ok")} hover:bg-green-200`} title={`entry ${m.receipt.entry_hash}`} data-testid="receipt"
                    onClick={() => navigate(`/trust?event=${m.receipt!.event_id}`)}>
                    ✔ receipt #{m.receipt.position} · {short(m.receipt.event_id, 8)}
                  </button>
                )}
              </div>
            )}
          </div>
        ))}
        <div ref={endRef} />
      </div>
      <form className="sticky bottom-0 flex gap-2 bg-surface pt-2" onSubmit={send}>
        <label htmlFor="prompt" className="sr-only">Message</label>
        <textarea id="prompt" rows={2} value={input} placeholder={mode === "nexus" ? "Task for NEXUS…" : "Message…"}
          className={`${cls.input} flex-1 resize-y`} onChange={(e) => setInput(e.target.value)} disabled={!ready}
          onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); e.currentTarget.form?.requestSubmit(); } }} />
        <button type="submit" className={cls.btn} disabled={!ready || busy || !input.trim() || (mode === "model" && !model)}>
          {busy ? (mode === "nexus" ? "Running…" : "Streaming…") : mode === "nexus" ? "Run" : "Send"}
        </button>
      </form>
    </div>
  );
}

/** One model, streamed: tokens as they arrive, then the receipt from the final chunk and the cost from it. */
async function chatOnce(history: Msg[], model: string, patch: (f: (m: Msg) => Msg) => void) {
  const res = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { ...authHeaders(), "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({
      model, stream: true, stream_options: { include_usage: true },
      messages: history.map(({ role, content }) => ({ role, content })),
    }),
  });
  if (!res.ok || !res.body) {
    const body = await res.json().catch(() => null);
    throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  }
  let receipt: Msg["receipt"];
  for await (const [event, data] of sse(res.body)) {
    if (data === "[DONE]") continue;
    const chunk = JSON.parse(data);
    if (event === "nexus.receipt") { receipt ??= chunk; continue; }
    if (chunk.error) throw new Error(chunk.error.message ?? "the upstream broke the stream");
    const delta = chunk.choices?.[0]?.delta?.content ?? "";
    if (chunk.nexus_receipt) receipt = chunk.nexus_receipt;
    const usage = chunk.usage ? `${chunk.usage.prompt_tokens} in / ${chunk.usage.completion_tokens} out tokens` : undefined;
    if (delta || usage) patch((m) => ({ ...m, content: m.content + delta, tokens: usage ?? m.tokens }));
  }
  patch((m) => ({ ...m, streaming: false, receipt }));
  if (receipt) {
    const r = await api<any>(`/v1/receipts/${receipt.event_id}`);
    const p = r.entry.payload;
    patch((m) => ({ ...m, cost: money(p.cost_micros, p.currency) }));
  }
}

/** A NEXUS run, streamed as SSE progress (plan, subtasks, consensus, synthesis deltas, done): folded as it comes. */
async function runNexus(task: string, planner: string, patch: (f: (m: Msg) => Msg) => void) {
  const res = await fetch("/v1/nexus/runs", {
    method: "POST",
    headers: { ...authHeaders(), "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ task, stream: true, ...(planner ? { planner_model: planner } : {}) }),
  });
  if (!res.ok || !res.body) {
    const body = await res.json().catch(() => null);
    throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  }
  const runId = res.headers.get("x-nexus-run-id") ?? undefined;
  patch((m) => ({ ...m, nexus: emptyProgress(runId) }));
  for await (const [event, data] of sse(res.body)) {
    const payload = JSON.parse(data);
    patch((m) => {
      const nexus = applyRunEvent(m.nexus ?? emptyProgress(runId), event, payload);
      return { ...m, nexus, content: nexus.done?.answer ?? nexus.synthesis };
    });
  }
  patch((m) => {
    const run = m.nexus!;
    if (run.error) return { ...m, streaming: false, error: run.error };
    if (!run.done) return { ...m, streaming: false, error: "the run's stream ended before it finished" };
    return { ...m, streaming: false, receipt: run.done.receipt, cost: costText(run.done.cost_micros),
      tokens: `${run.done.steps.length} inferences` };
  });
}

const STATUS_ICON = { waiting: "○", running: "◔", done: "●" } as const;

function NexusProgress({ run, streaming }: { run: RunProgress; streaming: boolean }) {
  const [showMesh, setShowMesh] = useState(streaming);
  return (
    <section aria-label="NEXUS run" data-testid="nexus-run"
      className="my-1.5 grid min-w-0 gap-1.5 border-l-[3px] border-indigo-200 py-1 pl-2.5 text-sm">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <strong data-testid="nexus-plan">
          {!run.planned ? (streaming ? "Planning…" : run.error ? "The run failed before its plan" : "No plan")
            : run.fallback ? "Plan: the planner failed twice, one model answers the task"
            : `Plan: ${run.subtasks.length} subtask${run.subtasks.length > 1 ? "s" : ""}`}
        </strong>
        {run.runId && (run.planned || run.error) && (
          <a href={`/mesh?run=${run.runId}`} className="text-accent underline" onClick={(e) => { e.preventDefault(); navigate(`/mesh?run=${run.runId}`); }}>
            Open in AI Mesh
          </a>
        )}
      </div>
      {run.subtasks.length > 0 && (
        <ol aria-label="Subtasks" className="m-0 grid list-none gap-1.5 p-0">
          {run.subtasks.map((s) => (
            <li key={s.id} data-testid="nexus-subtask" data-status={s.status}>
              <span aria-label={s.status} title={s.status}>{STATUS_ICON[s.status]}</span>{" "}
              <strong>{s.id}</strong> <span className="text-muted">({s.kind}{s.depends_on.length ? `, after ${s.depends_on.join(", ")}` : ""})</span>
              {s.model && <> → <code data-testid="nexus-model">{s.model}</code></>}
              {s.voters && s.voters.length > 1 && <span className="text-muted"> · voters {s.voters.join(", ")}</span>}
              {s.consensus && (
                <span className={`${pill(s.consensus.decided ? "ok" : "warn")} ml-1.5`} data-testid="nexus-consensus">
                  consensus {Math.round(s.consensus.score * 100)}% ({s.consensus.cluster_sizes.join("/")}, {s.consensus.mode})
                  {s.consensus.escalated ? " · escalated" : ""}{s.consensus.decided ? "" : " · unverified"}
                </span>
              )}
              <div className="text-muted">{s.prompt}</div>
              {s.answer && <div data-testid="nexus-answer">⇒ {s.answer.length > 240 ? `${s.answer.slice(0, 240)}…` : s.answer}</div>}
            </li>
          ))}
        </ol>
      )}
      {(run.synthesis || run.synthesised) && (
        <div data-testid="nexus-synthesis" className="text-muted">
          Synthesis{run.synthesisModel ? ` by ${run.synthesisModel}` : ""}{run.synthesised ? " ✔" : "…"}
        </div>
      )}
      {run.done?.flagged.length ? <div className={pill("warn")}>flagged: {run.done.flagged.join(", ")}</div> : null}
      {run.runId && (run.planned || run.error) && (
        <details open={streaming || undefined} onToggle={(e) => setShowMesh(e.currentTarget.open)}>
          <summary className="cursor-pointer text-muted">Mesh</summary>
          {(streaming || showMesh) && <InlineMesh runId={run.runId} voters={streaming ? inFlight(run) : NO_VOTERS} />}
        </details>
      )}
    </section>
  );
}

const NO_VOTERS: Record<string, string[]> = {};
const inFlight = (run: RunProgress) =>
  Object.fromEntries(run.subtasks.filter((s) => s.status === "running" && s.voters).map((s) => [s.id, s.voters!]));

/** The run's graph, live while it runs (models as nodes, calls as edges; voters still answering flow). */
function InlineMesh({ runId, voters }: { runId: string; voters: Record<string, string[]> }) {
  const { graph, error, retry } = useRunGraph(runId);
  if (error) return <ErrorBox message={error} onRetry={retry} />;
  if (!graph) return <Loading what="mesh" />;
  return <div className="max-w-[520px]" data-testid="chat-mesh"><MeshGraph graph={graph} view="models" voters={voters} /></div>;
}
