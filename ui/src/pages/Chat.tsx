import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, authHeaders } from "../auth";
import { navigate } from "../router";
import { Empty, ErrorBox, Loading, money, short } from "../ui";

type Msg = {
  role: "user" | "assistant"; content: string; streaming?: boolean; error?: string;
  receipt?: { event_id: string; position: number; entry_hash: string }; cost?: string; tokens?: string;
};

/** Parse an SSE body: yields [event name, data] per message. */
async function* sse(body: ReadableStream<Uint8Array>): AsyncGenerator<[string, string]> {
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

export default function Chat() {
  const [models, setModels] = useState<string[] | null>(null);
  const [modelsError, setModelsError] = useState("");
  const [model, setModel] = useState("");
  const [input, setInput] = useState("");
  const [messages, setMessages] = useState<Msg[]>([]);
  const [busy, setBusy] = useState(false);
  const endRef = useRef<HTMLDivElement>(null);

  const loadModels = () => {
    setModelsError("");
    api<{ data: { id: string }[] }>("/v1/models")
      .then((r) => { const ids = r.data.map((m) => m.id); setModels(ids); setModel((m) => m || ids[0] || ""); })
      .catch((e) => setModelsError(e.message));
  };
  useEffect(loadModels, []);
  useEffect(() => { endRef.current?.scrollIntoView?.({ block: "end" }); }, [messages]); // it may return a Promise

  const patchLast = (f: (m: Msg) => Msg) => setMessages((ms) => [...ms.slice(0, -1), f(ms[ms.length - 1])]);

  async function send(e: FormEvent) {
    e.preventDefault();
    if (!input.trim() || !model) return;
    const history: Msg[] = [...messages.filter((m) => !m.error), { role: "user", content: input }];
    setMessages([...history, { role: "assistant", content: "", streaming: true }]);
    setInput("");
    setBusy(true);
    try {
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
        if (delta || usage) patchLast((m) => ({ ...m, content: m.content + delta, tokens: usage ?? m.tokens }));
      }
      patchLast((m) => ({ ...m, streaming: false, receipt }));
      if (receipt) {
        const r = await api<any>(`/v1/receipts/${receipt.event_id}`);
        const p = r.entry.payload;
        patchLast((m) => ({ ...m, cost: money(p.cost_micros, p.currency) }));
      }
    } catch (err) {
      patchLast((m) => ({ ...m, streaming: false, error: (err as Error).message }));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="page chat">
      <div className="page-head">
        <h1>Chat</h1>
        <div className="toolbar">
          <label htmlFor="model">Model</label>
          <select id="model" value={model} onChange={(e) => setModel(e.target.value)} disabled={!models?.length}>
            {(models ?? []).map((m) => <option key={m}>{m}</option>)}
          </select>
          {messages.length > 0 && <button className="secondary" onClick={() => setMessages([])} disabled={busy}>New chat</button>}
        </div>
      </div>
      {modelsError && <ErrorBox message={modelsError} onRetry={loadModels} />}
      {!models && !modelsError && <Loading what="models" />}
      {models && !models.length && <Empty>No deployments configured: add one with <code>nexus deployments add</code>.</Empty>}
      <div className="messages" aria-live="polite" aria-label="Conversation">
        {!messages.length && models?.length ? <Empty>Ask something; tokens stream as they arrive.</Empty> : null}
        {messages.map((m, i) => (
          <div key={i} className={`msg ${m.role}`} data-testid={`msg-${m.role}`}>
            <div className="msg-role">{m.role === "user" ? "You" : model}</div>
            <div className="msg-text">{m.content}{m.streaming && <span className="cursor" aria-hidden>▍</span>}</div>
            {m.error && <p className="error" role="alert">{m.error}</p>}
            {m.role === "assistant" && !m.streaming && !m.error && (
              <div className="msg-meta">
                {m.tokens && <span>{m.tokens}</span>}
                {m.cost && <span data-testid="cost">cost {m.cost}</span>}
                {m.receipt && (
                  <button className="badge" title={`entry ${m.receipt.entry_hash}`} data-testid="receipt"
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
      <form className="composer" onSubmit={send}>
        <label htmlFor="prompt" className="sr-only">Message</label>
        <textarea id="prompt" rows={2} value={input} placeholder="Message…" onChange={(e) => setInput(e.target.value)}
          onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); e.currentTarget.form?.requestSubmit(); } }} />
        <button type="submit" disabled={busy || !input.trim() || !model}>{busy ? "Streaming…" : "Send"}</button>
      </form>
    </div>
  );
}
