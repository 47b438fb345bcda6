import { useEffect, useState, type FormEvent } from "react";
import { useQuery } from "urql";
import { api } from "../auth";
import { errorText } from "../gql";
import { verifyReceipt, type Check, type Receipt } from "../verify";
import { Card, Empty, ErrorBox, Loading, short } from "../ui";

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
    <div className="page">
      <div className="page-head"><h1>Trust Center</h1></div>
      <Card title="Verify a receipt">
        <p className="muted">Fetches <code>/v1/receipts/&lt;event id&gt;</code> and checks it here, in your browser:
          the entry hash (RFC 8785 + BLAKE3/SHA-256), the RFC 6962 inclusion proof, and the Ed25519 checkpoint signature.</p>
        <form className="row" onSubmit={verify}>
          <label htmlFor="event" className="sr-only">Event id</label>
          <input id="event" placeholder="event id (uuid)" value={eventId} onChange={(e) => setEventId(e.target.value)} />
          <button type="submit" disabled={verifying || !eventId.trim()}>{verifying ? "Verifying…" : "Verify"}</button>
        </form>
        {verifyError && <ErrorBox message={verifyError} />}
        {checks && (
          <div className={allOk ? "verdict ok" : "verdict bad"} role="status" data-testid="verdict">
            <strong>{allOk ? "Verified" : "NOT verified"}</strong>: entry #{receipt?.entry.position} ({receipt?.entry.type})
            is in the ledger of size {receipt?.checkpoint.tree_size}, signed by key {receipt?.checkpoint.key_id}.
            <ul>{checks.map((c) => <li key={c.name}>{c.ok ? "✔" : "✘"} {c.name} <span className="muted">({c.detail})</span></li>)}</ul>
          </div>
        )}
      </Card>
      <div className="grid2">
        <Card title="Latest signed checkpoints">
          {error && <ErrorBox message={errorText(error)} />}
          {fetching && !data && <Loading what="checkpoints" />}
          {data && !data.checkpoints.length && <Empty>No checkpoint signed yet.</Empty>}
          {data?.checkpoints?.length > 0 && (
            <div className="table-wrap"><table aria-label="Checkpoints">
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
            <ul className="keys">{Object.entries(keys).map(([id, k]) => (
              <li key={id}><code>{id}</code> ed25519 <code className="wrap">{k}</code></li>
            ))}</ul>
          )}
        </Card>
      </div>
    </div>
  );
}
