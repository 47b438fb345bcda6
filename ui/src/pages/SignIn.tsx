import { useEffect, useState, type FormEvent } from "react";
import {
  knownTenants, markSsoPending, signInWithKey, signInWithPassword, ssoLoginUrl, ssoProviders,
  type Session, type SsoProvider,
} from "../auth";
import { cls } from "../ui";

type Method = "password" | "key";

interface Props {
  onSignedIn: (session: Session) => void;
  tenant?: string; // prefilled by the tenant switcher
  notice?: string; // e.g. "your session ended"
  onCancel?: () => void; // back to the session still open (tenant switcher)
}

/** Password sign-in (tenant, email, password), the tenant's SSO providers, or an API key (`nx_...`). */
export function SignIn({ onSignedIn, tenant: prefilled, notice, onCancel }: Props) {
  const recent = knownTenants();
  const [method, setMethod] = useState<Method>("password");
  const first = prefilled ?? recent[0]?.tenant ?? "";
  const [tenant, setTenant] = useState(first);
  const [email, setEmail] = useState(recent.find((t) => t.tenant === first)?.email ?? "");
  const [password, setPassword] = useState("");
  const [key, setKey] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const providers = useSsoProviders(tenant.trim());

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      onSignedIn(method === "password" ? await signInWithPassword(tenant, email, password) : await signInWithKey(key));
    } catch (err) {
      setError(`Sign-in failed: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  }
  const pick = (t: string) => {
    setTenant(t);
    setEmail(recent.find((r) => r.tenant === t)?.email ?? "");
  };
  const tab = (m: Method, label: string) => (
    <button type="button" role="tab" id={`tab-${m}`} aria-selected={method === m} aria-controls="signin-panel"
      onClick={() => { setMethod(m); setError(""); }}
      className={`flex-1 rounded-md px-3 py-1.5 text-sm ${method === m ? "bg-white text-ink shadow-sm" : "bg-transparent text-muted hover:text-ink"}`}>
      {label}
    </button>
  );

  return (
    <main className="grid min-h-screen place-items-center bg-surface p-4">
      <form className="grid w-full max-w-md gap-3 rounded-xl border border-line bg-white p-6 shadow-sm" onSubmit={submit}
        aria-label="Sign in">
        <h1 className="text-xl font-semibold">NexusAI Console</h1>
        {notice && <p className="rounded-md border border-amber-200 bg-amber-50 px-3 py-2 text-sm" role="status">{notice}</p>}
        <div role="tablist" aria-label="Sign-in method" className="flex gap-1 rounded-lg bg-gray-100 p-1">
          {tab("password", "Password")}
          {tab("key", "API key")}
        </div>
        <div role="tabpanel" id="signin-panel" aria-label="Sign-in details" className="grid gap-3">
        {method === "password" ? (
          <>
            {!recent.length && (
              <p className="text-sm text-muted">First time here? <code>nexus up</code> printed an admin API key: use the
                API key tab. Users get a password through an invitation (GraphQL <code>inviteUser</code>).</p>
            )}
            <label className={cls.label} htmlFor="tenant">Tenant</label>
            <input id="tenant" className={cls.input} autoComplete="organization" value={tenant} required
              onChange={(e) => setTenant(e.target.value)} />
            {recent.length > 1 && (
              <p className="flex flex-wrap items-center gap-1 text-xs text-muted">Signed in here before:
                {recent.map((r) => (
                  <button key={r.tenant} type="button" onClick={() => pick(r.tenant)}
                    className="rounded-full border border-line bg-white px-2 py-0.5 text-xs text-ink hover:bg-gray-50">{r.tenant}</button>
                ))}
              </p>
            )}
            <label className={cls.label} htmlFor="email">Email</label>
            <input id="email" className={cls.input} type="email" autoComplete="username" value={email} required
              onChange={(e) => setEmail(e.target.value)} />
            <label className={cls.label} htmlFor="password">Password</label>
            <input id="password" className={cls.input} type="password" autoComplete="current-password" value={password}
              required onChange={(e) => setPassword(e.target.value)} />
          </>
        ) : (
          <>
            <p className="text-sm text-muted">An API key signs in to the key's tenant. <code>nexus up</code> prints the first admin key once.</p>
            <label className={cls.label} htmlFor="apikey">API key</label>
            <input id="apikey" className={cls.input} type="password" autoComplete="off" placeholder="nx_…" value={key}
              onChange={(e) => setKey(e.target.value)} required />
          </>
        )}
        </div>
        {error && <p className="rounded-md border border-red-200 bg-red-50 px-3 py-2 text-bad" role="alert">{error}</p>}
        <div className="flex gap-2">
          <button type="submit" className={`${cls.btn} flex-1`}
            disabled={busy || (method === "key" ? !key.trim() : !tenant.trim() || !email.trim() || !password)}>
            {busy ? "Signing in…" : "Sign in"}
          </button>
          {onCancel && <button type="button" className={cls.btnSecondary} onClick={onCancel}>Cancel</button>}
        </div>
        {method === "password" && providers.length > 0 && (
          <div className="grid gap-2" aria-label="Single sign-on" role="group">
            <p className="text-center text-xs uppercase tracking-wide text-muted">or</p>
            {providers.map((p) => (
              <a key={p.id} href={ssoLoginUrl(p, tenant.trim())} onClick={() => markSsoPending(tenant.trim())}
                className={`${cls.btnSecondary} no-underline`}>Sign in with {p.name}</a>
            ))}
          </div>
        )}
        <p className="text-xs text-muted">
          {method === "password"
            ? "The session lasts while you use it (the access token is renewed every few minutes) and ends at sign-out."
            : "The key is kept in this tab only (sessionStorage) and sent as a Bearer token."}
        </p>
      </form>
    </main>
  );
}

/** The tenant's SSO providers, asked for once typing pauses; none when it has none or SSO is not offered. */
function useSsoProviders(tenant: string): SsoProvider[] {
  const [providers, setProviders] = useState<SsoProvider[]>([]);
  useEffect(() => {
    setProviders([]);
    if (!tenant) return;
    const abort = new AbortController();
    const timer = setTimeout(() => ssoProviders(tenant, abort.signal).then(setProviders).catch(() => undefined), 300);
    return () => { clearTimeout(timer); abort.abort(); };
  }, [tenant]);
  return providers;
}
