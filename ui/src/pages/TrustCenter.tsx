import { useEffect, useState, type FormEvent } from "react";
import { useQuery } from "urql";
import { api, authHeaders, HttpError } from "../auth";
import { errorText } from "../gql";
import { JsonView } from "../JsonView";
import { verifyReceipt, type Check, type Receipt } from "../verify";
import { Card, cls, Empty, ErrorBox, Loading, saveBlob, short } from "../ui";

const CHECKPOINTS = `{ checkpoints(limit: 10) { treeSize root signedAt keyId hashAlg signature } }`;

export default function TrustCenter() {
  const [{ data, fetching, error }, refetch] = useQuery({ query: CHECKPOINTS, requestPolicy: "network-only" });
  const [keys, setKeys] = useState<Record<string, string> | null>(null);
  const [keysError, setKeysError] = useState("");
  const [eventId, setEventId] = useState(new URLSearchParams(location.search).get("event") ?? "");
  const [checks, setChecks] = useState<Check[] | null>(null);
  const [receipt, setReceipt] = useState<Receipt | null>(null);
  const [verifying, setVerifying] = useState(false);
  const [verifyError, setVerifyError] = useState("");

  useEffect(() => {
    api<{ keys: Record<string, string> }>("/.well-known/nexus-keys.json").then((r) => setKeys(r.keys))
      .catch((e) => setKeysError(e.message));
  }, []);

  async function verify(e?: FormEvent) {
    e?.preventDefault();
    setVerifying(true); setVerifyError(""); setChecks(null); setReceipt(null);
    try {
      const r = await api<Receipt>(`/v1/receipts/${encodeURIComponent(eventId.trim())}`);
      setReceipt(r);
      setChecks(await verifyReceipt(r));
      refetch({ requestPolicy: "network-only" });
    } catch (err) {
      setVerifyError((err as Error).message);
    } finally {
      setVerifying(false);
    }
  }
  const allOk = checks?.length && checks.every((c) => c.ok);

  return (
    <div className={cls.page}>
      <h1 className={cls.h1}>Trust Center</h1>
      <Card title="Verify a receipt">
        <p className="mb-3 text-sm text-muted">Fetches <code>/v1/receipts/&lt;event id&gt;</code> and checks it here, in your browser:
          the entry hash (RFC 8785 + BLAKE3/SHA-256), the RFC 6962 inclusion proof, and the Ed25519 checkpoint signature.</p>
        <form className="flex flex-wrap gap-2" onSubmit={verify}>
          <label htmlFor="event" className="sr-only">Event id</label>
          <input id="event" className={`${cls.input} min-w-48 flex-1`} placeholder="event id (uuid)" value={eventId}
            onChange={(e) => setEventId(e.target.value)} />
          <button type="submit" className={cls.btn} disabled={verifying || !eventId.trim()}>{verifying ? "Verifying…" : "Verify"}</button>
        </form>
        {verifyError && <ErrorBox message={verifyError} />}
        {checks && (
          <div className={`mt-3 rounded-lg border p-3 ${allOk ? "border-green-200 bg-green-50" : "border-red-200 bg-red-50"}`}
            role="status" data-testid="verdict">
            <strong>{allOk ? "Verified" : "NOT verified"}</strong>: entry #{receipt?.entry.position} ({receipt?.entry.type})
            is in the ledger of size {receipt?.checkpoint.tree_size}, signed by key {receipt?.checkpoint.key_id}.
            <ul className="mt-2 grid gap-0.5 break-words">{checks.map((c) => (
              <li key={c.name}>{c.ok ? "✔" : "✘"} {c.name} <span className="text-muted">({c.detail})</span></li>))}</ul>
          </div>
        )}
        {receipt && (
          <details className="mt-3" open>
            <summary className="cursor-pointer text-sm text-muted">The receipt as fetched</summary>
            <div className="mt-2"><JsonView value={receipt} label="Receipt JSON" height={320} /></div>
          </details>
        )}
      </Card>
      <AuditBundle />
      <div className="grid gap-4 lg:grid-cols-2">
        <Card title="Latest signed checkpoints">
          {error && <ErrorBox message={errorText(error)} />}
          {fetching && !data && <Loading what="checkpoints" />}
          {data && !data.checkpoints.length && <Empty>No checkpoint signed yet.</Empty>}
          {data?.checkpoints?.length > 0 && (
            <div className="overflow-x-auto"><table className={cls.table} aria-label="Checkpoints">
              <thead><tr><th>Size</th><th>Root</th><th>Signed</th><th>Key</th></tr></thead>
              <tbody>{data.checkpoints.map((c: any) => (
                <tr key={`${c.treeSize}-${c.signedAt}`}><td>{c.treeSize}</td><td><code title={c.root}>{short(c.root, 16)}</code></td>
                  <td>{new Date(c.signedAt).toLocaleString()}</td><td><code>{c.keyId}</code></td></tr>
              ))}</tbody>
            </table></div>
          )}
        </Card>
        <Card title="Public keys">
          {keysError && <ErrorBox message={keysError} />}
          {!keys && !keysError && <Loading what="keys" />}
          {keys && !Object.keys(keys).length && <Empty>No signing key published.</Empty>}
          {keys && (
            <ul className="grid gap-2">{Object.entries(keys).map(([id, k]) => (
              <li key={id} className="grid gap-0.5">
                <span className="text-sm"><code>{id}</code> <span className="text-xs text-muted">Ed25519</span></span>
                <code className="break-all text-xs">{k}</code>
              </li>
            ))}</ul>
          )}
        </Card>
      </div>
    </div>
  );
}

/** Download the tenant's audit bundle (GET /v1/audit/bundle): verify it offline with `nexus audit verify`. */
function AuditBundle() {
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [stream, setStream] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [done, setDone] = useState("");

  async function download(e: FormEvent) {
    e.preventDefault();
    setBusy(true); setError(""); setDone("");
    try {
      const query = new URLSearchParams();
      if (from.trim()) query.set("from", from.trim());
      if (to.trim()) query.set("to", to.trim());
      if (stream.trim()) query.set("stream", stream.trim());
      const res = await fetch(`/v1/audit/bundle?${query}`, { headers: authHeaders() });
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        throw new HttpError(res.status, body?.error?.message ?? `${res.status} ${res.statusText}`);
      }
      const name = /filename="([^"]+)"/.exec(res.headers.get("content-disposition") ?? "")?.[1] ?? "audit-bundle.nexus";
      const blob = await res.blob();
      saveBlob(name, blob);
      setDone(`${name} (${(blob.size / 1024).toFixed(1)} KB) downloaded.`);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  }
  return (
    <Card title="Audit bundle">
      <p className="mb-3 text-sm text-muted">
        One file with this tenant's ledger entries, an inclusion proof for each, a signed checkpoint and the public
        keys. An auditor checks it offline with <code>nexus audit verify FILE --trusted-key KEY</code>; it never holds
        another tenant's entries. Leave the fields empty for the tenant's whole history, or narrow it to positions
        and/or one stream.
      </p>
      <form className="flex flex-wrap items-end gap-2" onSubmit={download}>
        <label className="grid gap-1 text-sm">From position
          <input className={`${cls.input} w-32`} type="number" min={1} value={from} onChange={(e) => setFrom(e.target.value)} />
        </label>
        <label className="grid gap-1 text-sm">To position
          <input className={`${cls.input} w-32`} type="number" min={1} value={to} onChange={(e) => setTo(e.target.value)} />
        </label>
        <label className="grid gap-1 text-sm">Stream (optional)
          <input className={`${cls.input} w-64 max-w-full`} placeholder="e.g. inference-…" value={stream}
            onChange={(e) => setStream(e.target.value)} />
        </label>
        <button type="submit" className={cls.btn} disabled={busy}>{busy ? "Preparing…" : "Download audit bundle"}</button>
      </form>
      {error && <ErrorBox message={error} />}
      {done && <p className="mt-2 text-sm text-ok" role="status">{done}</p>}
    </Card>
  );
}
