import { useMemo, useState, type FormEvent } from "react";
import { useMutation, useQuery } from "urql";
import { errorText } from "../gql";
import { Card, cls, Empty, ErrorBox, Loading } from "../ui";

const LIST = `{ apiKeys { keyId name scopes revoked issuedAt } }`;
const CREATE = `mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { key { keyId name scopes } secret receipt { position } }
}`;
const REVOKE = `mutation Revoke($keyId: String!) { revokeApiKey(keyId: $keyId) { position } }`;
const SCOPES = ["inference", "read", "admin"];

export default function ApiKeys() {
  const [{ data, fetching, error }, refetch] = useQuery({ query: LIST, requestPolicy: "network-only" });
  const [created, create] = useMutation(CREATE);
  const [revoked, revoke] = useMutation(REVOKE);
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<string[]>(["inference", "read"]);
  const [secret, setSecret] = useState<string | null>(null);
  // The list is a read model that catches up a moment after a command: show our own changes at once.
  const [mine, setMine] = useState<Record<string, any>>({});
  const keys = useMemo(() => {
    if (!data) return null;
    const listed = data.apiKeys.map((k: any) => ({ ...k, ...(mine[k.keyId]?.revoked ? { revoked: true } : {}) }));
    const missing = Object.values(mine).filter((k: any) => !listed.some((l: any) => l.keyId === k.keyId));
    return [...missing, ...listed];
  }, [data, mine]);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const r = await create({ input: { name, scopes } });
    if (!r.error) {
      setSecret(r.data.createApiKey.secret);
      const k = r.data.createApiKey.key;
      setMine((m) => ({ ...m, [k.keyId]: { ...k, revoked: false, issuedAt: new Date().toISOString() } }));
      setName("");
      refetch({ requestPolicy: "network-only" });
    }
  }
  async function doRevoke(keyId: string) {
    if (!confirm(`Revoke key ${keyId}? It stops working at once.`)) return;
    const r = await revoke({ keyId });
    if (!r.error) {
      const known = keys?.find((k: any) => k.keyId === keyId);
      setMine((m) => ({ ...m, [keyId]: { ...known, revoked: true } }));
      refetch({ requestPolicy: "network-only" });
    }
  }

  return (
    <div className={cls.page}>
      <h1 className={cls.h1}>API keys</h1>
      <Card title="Create a key">
        <form className="flex flex-wrap items-center gap-3" onSubmit={submit}>
          <label htmlFor="keyname" className={cls.label}>Name</label>
          <input id="keyname" className={`${cls.input} min-w-48 flex-1`} value={name} onChange={(e) => setName(e.target.value)} required placeholder="e.g. backend" />
          <fieldset className="flex flex-wrap items-center gap-3"><legend className="float-left mr-2 text-sm text-muted">Scopes</legend>
            {SCOPES.map((s) => (
              <label key={s} className="flex items-center gap-1 text-sm"><input type="checkbox" checked={scopes.includes(s)}
                onChange={(e) => setScopes(e.target.checked ? [...scopes, s] : scopes.filter((x) => x !== s))} /> {s}</label>
            ))}
          </fieldset>
          <button type="submit" className={cls.btn} disabled={created.fetching || !name.trim() || !scopes.length}>Create key</button>
        </form>
        {created.error && <ErrorBox message={errorText(created.error)} />}
        {secret && (
          <div className="mt-3 grid gap-2 rounded-lg border border-amber-200 bg-amber-50 p-3" role="status">
            <p><strong>Copy this key now: it is shown once and never again.</strong></p>
            <code data-testid="secret" className="break-all">{secret}</code>
            <div className="flex flex-wrap gap-2">
              <button className={cls.btnSecondary} onClick={() => navigator.clipboard?.writeText(secret)}>Copy</button>
              <button className={cls.btnSecondary} onClick={() => setSecret(null)}>I have stored it</button>
            </div>
          </div>
        )}
      </Card>
      <Card title="Keys">
        {error && <ErrorBox message={errorText(error)} onRetry={() => refetch({ requestPolicy: "network-only" })} />}
        {revoked.error && <ErrorBox message={errorText(revoked.error)} />}
        {fetching && !data && <Loading what="keys" />}
        {keys && !keys.length && <Empty>No API keys.</Empty>}
        {keys && keys.length > 0 && (
          <div className="overflow-x-auto"><table className={cls.table} aria-label="API keys">
            <thead><tr><th>Key id</th><th>Name</th><th>Scopes</th><th>Issued</th><th>Status</th><th /></tr></thead>
            <tbody>{keys.map((k: any) => (
              <tr key={k.keyId} data-testid={`key-${k.name}`}>
                <td><code>{k.keyId}</code></td><td>{k.name}</td><td>{k.scopes.join(", ")}</td>
                <td>{k.issuedAt ? new Date(k.issuedAt).toLocaleString() : "–"}</td>
                <td><span className={`rounded-full px-2 py-0.5 text-xs ${k.revoked ? "bg-red-100 text-bad" : "bg-green-100 text-ok"}`}>{k.revoked ? "revoked" : "active"}</span></td>
                <td>{!k.revoked && <button className={cls.btnDanger} aria-label={`Revoke ${k.name}`} onClick={() => doRevoke(k.keyId)}>Revoke</button>}</td>
              </tr>
            ))}</tbody>
          </table></div>
        )}
      </Card>
    </div>
  );
}
