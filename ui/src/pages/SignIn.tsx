import { useState, type FormEvent } from "react";

/** Sign in with an API key (`nx_...`); it is checked against /graphql `me` before it is kept. */
export function SignIn({ onSignedIn }: { onSignedIn: (token: string) => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const res = await fetch("/graphql", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key.trim()}` },
        body: JSON.stringify({ query: "{ me { tenantId subject } }" }),
      });
      const body = await res.json().catch(() => null);
      if (!res.ok || body?.errors) throw new Error(body?.errors?.[0]?.message ?? `HTTP ${res.status}`);
      onSignedIn(key.trim());
    } catch (err) {
      setError(`Sign-in failed: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="signin">
      <form className="card" onSubmit={submit} aria-label="Sign in">
        <h1>NexusAI Console</h1>
        <p className="muted">Sign in with an API key. <code>nexus up</code> prints the first admin key once.</p>
        <label htmlFor="apikey">API key</label>
        <input id="apikey" type="password" autoComplete="off" placeholder="nx_…" value={key}
          onChange={(e) => setKey(e.target.value)} required />
        {error && <p className="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy || !key.trim()}>{busy ? "Signing in…" : "Sign in"}</button>
        <p className="muted small">The key is kept in this tab only (sessionStorage) and sent as a Bearer token.</p>
      </form>
    </main>
  );
}
