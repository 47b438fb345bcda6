import { lazy, Suspense, useEffect, useMemo, useState } from "react";
import { Provider } from "urql";
import {
  getSession, knownTenants, refreshSession, SESSION_REFUSED, sessionFromCookie, setSession, signOut, takeSsoPending,
  type Session,
} from "./auth";
import { makeClient } from "./gql";
import { navigate, usePath } from "./router";
import { Loading } from "./ui";
import { SignIn } from "./pages/SignIn";

// Every page is its own chunk: Recharts, the verifier and Monaco load with the pages that use them.
const Dashboard = lazy(() => import("./pages/Dashboard"));
const Chat = lazy(() => import("./pages/Chat"));
const Mesh = lazy(() => import("./pages/Mesh"));
const InferenceLog = lazy(() => import("./pages/InferenceLog"));
const Costs = lazy(() => import("./pages/Costs"));
const TrustCenter = lazy(() => import("./pages/TrustCenter"));
const ApiKeys = lazy(() => import("./pages/ApiKeys"));
const Settings = lazy(() => import("./pages/Settings"));

// The navigation of the whole product: only pages that exist are listed.
const PAGES = [
  { path: "/", label: "Dashboard", Page: Dashboard },
  { path: "/chat", label: "Chat", Page: Chat },
  { path: "/mesh", label: "AI Mesh", Page: Mesh },
  { path: "/logs", label: "Inference log", Page: InferenceLog },
  { path: "/costs", label: "Cost & usage", Page: Costs },
  { path: "/trust", label: "Trust Center", Page: TrustCenter },
  { path: "/keys", label: "API keys", Page: ApiKeys },
  { path: "/settings", label: "Settings", Page: Settings },
];
const RENEW_BEFORE_MS = 60_000; // access tokens live 10 minutes (docs/auth.md)
// Read once per page load: back from an SSO provider (a first sign-in, or a tenant switch that went by SSO).
const RETURNING_FROM_SSO = takeSsoPending() !== null;

export function App() {
  const [session, setSess] = useState<Session | null>(getSession());
  const [switchTo, setSwitchTo] = useState<string | null>(null); // tenant switcher: sign in beside the open session
  const [notice, setNotice] = useState("");
  const [resuming, setResuming] = useState(RETURNING_FROM_SSO);
  const path = usePath();
  // One client per signed-in identity; a refreshed token is picked up per request (gql.ts reads it each time).
  const identity = session ? `${session.tenant}|${session.subject}` : "";
  const client = useMemo(() => (identity ? makeClient() : null), [identity]);

  // Back from an SSO provider: the API set the session cookies; trade them for a session of this tab.
  useEffect(() => {
    if (!resuming) return;
    sessionFromCookie().then(signedIn).catch(() => setNotice("Single sign-on did not finish: sign in again."))
      .finally(() => setResuming(false));
  }, [resuming]);

  // Renew the access token a minute before it expires, or at once when the API refuses it; a session that
  // cannot be renewed (or an API key that is refused) has ended.
  useEffect(() => {
    if (!session) return;
    const ended = () => {
      void signOut(null);
      setSess(null);
      setNotice("Your session ended (expired, revoked or signed out elsewhere). Sign in again.");
    };
    const renew = () => (session.method === "key" ? ended() : refreshSession(session).then(adopt).catch(ended));
    window.addEventListener(SESSION_REFUSED, renew);
    const timer = session.expiresAt === undefined ? undefined
      : setTimeout(renew, Math.max(0, session.expiresAt - Date.now() - RENEW_BEFORE_MS));
    return () => { clearTimeout(timer); window.removeEventListener(SESSION_REFUSED, renew); };
  }, [session]);

  function adopt(next: Session) {
    setSession(next);
    setSess(next);
    setNotice("");
  }
  async function signedIn(next: Session) {
    if (session && (session.tenant !== next.tenant || session.subject !== next.subject)) {
      await signOut(session, true).catch(() => undefined); // switching tenants ends the previous session
    }
    const otherTenant = session !== null && session.tenant !== next.tenant;
    adopt(next);
    setSwitchTo(null);
    if (path === "/signin") navigate("/");
    else if (otherTenant) navigate(path); // drop the query: it named something of the previous tenant
  }
  async function leave() {
    const leaving = session;
    setSess(null); // unmount the pages first: none of them asks (and is refused) while the session is revoked
    await signOut(leaving).catch(() => undefined);
  }

  // An access token that expired while the tab was closed is renewed before any page asks with it.
  const stale = session?.expiresAt !== undefined && session.expiresAt <= Date.now() + 5_000;
  if (resuming || (stale && switchTo === null)) return <Loading what="your session" />;
  if (!session || !client || switchTo !== null) {
    const switching = session && switchTo !== null
      ? `Switching tenant: you stay signed in to ${session.tenant} until this sign-in succeeds, then leave it.` : "";
    return <SignIn key={switchTo ?? "signin"} onSignedIn={signedIn} tenant={switchTo ?? undefined} notice={switching || notice}
      onCancel={session && switchTo !== null ? () => setSwitchTo(null) : undefined} />;
  }
  return (
    <Provider value={client}>
      <Shell session={session} path={path} onSignOut={leave} onSwitch={setSwitchTo} />
    </Provider>
  );
}

function Shell({ session, path, onSignOut, onSwitch }: {
  session: Session; path: string; onSignOut: () => void; onSwitch: (tenant: string) => void;
}) {
  const [menuOpen, setMenuOpen] = useState(false);
  const current = PAGES.find((p) => p.path === path) ?? PAGES[0];
  const go = (to: string) => { setMenuOpen(false); navigate(to); };
  return (
    <div className="grid min-h-screen grid-cols-1 grid-rows-[52px_1fr] bg-surface text-ink md:grid-cols-[13rem_1fr]">
      <header className="col-span-full flex items-center gap-3 bg-ink px-3 text-white md:px-4">
        <button className="bg-transparent px-2 text-xl text-white md:hidden" aria-label="Toggle navigation"
          aria-expanded={menuOpen} onClick={() => setMenuOpen(!menuOpen)}>☰</button>
        <span className="font-bold">NexusAI</span>
        <span className="flex-1" />
        <TenantSwitcher session={session} onSwitch={onSwitch} />
        <span className="hidden max-w-48 truncate text-sm text-gray-300 lg:inline" title={session.subject}>
          {session.email ?? session.subject}
        </span>
        <button className="whitespace-nowrap rounded-md border border-gray-600 bg-transparent px-2.5 py-1 text-sm text-white hover:bg-gray-800"
          onClick={onSignOut}>Sign out</button>
      </header>
      <nav aria-label="Main" className={`${menuOpen ? "flex" : "hidden"} absolute inset-x-0 top-[52px] z-20 flex-col gap-0.5 `
        + "border-b border-line bg-white p-2 shadow-md md:static md:flex md:border-r md:border-b-0 md:shadow-none"}>
        {PAGES.map((p) => (
          <a key={p.path} href={p.path} aria-current={p === current ? "page" : undefined}
            onClick={(e) => { e.preventDefault(); go(p.path); }}
            className={`rounded-md px-3 py-2 no-underline ${p === current ? "bg-accent-soft font-semibold text-accent" : "text-ink hover:bg-gray-50"}`}>
            {p.label}
          </a>
        ))}
      </nav>
      <main className="min-w-0 p-3 md:p-5">
        <Suspense fallback={<Loading what="page" />}>
          <current.Page />
        </Suspense>
      </main>
    </div>
  );
}

/** The current tenant, and the other tenants this browser signed into: choosing one signs in there. */
function TenantSwitcher({ session, onSwitch }: { session: Session; onSwitch: (tenant: string) => void }) {
  const others = knownTenants().filter((t) => t.tenant !== session.tenant);
  return (
    <label className="flex items-center gap-2 text-sm">
      <span className="hidden text-gray-300 sm:inline">Tenant</span>
      <select aria-label="Tenant" value={session.tenant} data-testid="tenant"
        className="max-w-28 rounded-md border sm:max-w-40 border-gray-600 bg-gray-800 px-2 py-1 text-white"
        onChange={(e) => onSwitch(e.target.value === "\u0000other" ? "" : e.target.value)}>
        <option value={session.tenant}>{session.tenant}</option>
        {others.map((t) => <option key={t.tenant} value={t.tenant}>{t.tenant}</option>)}
        <option value={"\u0000other"}>Another tenant…</option>
      </select>
    </label>
  );
}
