import { lazy, Suspense, useMemo, useState } from "react";
import { Provider } from "urql";
import { clearToken, getToken, setToken } from "./auth";
import { makeClient } from "./gql";
import { navigate, usePath } from "./router";
import { Loading } from "./ui";
import { SignIn } from "./pages/SignIn";

// Recharts and the verifier load with their pages, not with the first paint.
const Dashboard = lazy(() => import("./pages/Dashboard"));
const Chat = lazy(() => import("./pages/Chat"));
const InferenceLog = lazy(() => import("./pages/InferenceLog"));
const TrustCenter = lazy(() => import("./pages/TrustCenter"));
const ApiKeys = lazy(() => import("./pages/ApiKeys"));

const PAGES = [
  { path: "/", label: "Dashboard", Page: Dashboard },
  { path: "/chat", label: "Chat", Page: Chat },
  { path: "/logs", label: "Inference log", Page: InferenceLog },
  { path: "/trust", label: "Trust Center", Page: TrustCenter },
  { path: "/keys", label: "API keys", Page: ApiKeys },
];

export function App() {
  const [token, setTok] = useState(getToken());
  const path = usePath();
  const client = useMemo(() => (token ? makeClient(token) : null), [token]);
  const [menuOpen, setMenuOpen] = useState(false);

  if (!token || !client) {
    return <SignIn onSignedIn={(t) => { setToken(t); setTok(t); navigate(path === "/signin" ? "/" : path); }} />;
  }
  const current = PAGES.find((p) => p.path === path) ?? PAGES[0];
  const signOut = () => { clearToken(); setTok(null); };
  return (
    <Provider value={client}>
      <div className="shell">
        <header className="topbar">
          <button className="menu-btn" aria-label="Toggle navigation" aria-expanded={menuOpen}
            onClick={() => setMenuOpen(!menuOpen)}>☰</button>
          <span className="brand">NexusAI</span>
          <span className="spacer" />
          <button className="secondary" onClick={signOut}>Sign out</button>
        </header>
        <nav className={menuOpen ? "nav open" : "nav"} aria-label="Main">
          {PAGES.map((p) => (
            <a key={p.path} href={p.path} aria-current={p === current ? "page" : undefined}
              onClick={(e) => { e.preventDefault(); setMenuOpen(false); navigate(p.path); }}>{p.label}</a>
          ))}
        </nav>
        <main className="content">
          <Suspense fallback={<Loading what="page" />}>
            <current.Page />
          </Suspense>
        </main>
      </div>
    </Provider>
  );
}
