// Who this tab is signed in as, and the calls that sign in, refresh and sign out (docs/auth.md).
//
// The session (its access token, tenant, subject, expiry) is kept for this tab only (sessionStorage) and
// sent as `Authorization: Bearer`; GraphQL, the gateway and /v1/audit accept an API key or a user's access
// JWT that way. The refresh token is never stored by this code: it lives in the HttpOnly cookie the API
// sets on /v1/auth, plus this page's memory as a fallback for browsers that keep no Secure cookie on
// plain-HTTP localhost. The tenants this browser has signed into are remembered (localStorage, names
// only, never a credential) so the tenant switcher can offer them.

export type SignInMethod = "password" | "key" | "sso";

export interface Session {
  token: string;
  method: SignInMethod;
  tenant: string;
  subject: string; // "user:<id>" or "key:<id>"
  email?: string;
  expiresAt?: number; // epoch ms; API keys do not expire by themselves
}

export interface KnownTenant {
  tenant: string;
  email?: string;
  method: SignInMethod;
}

export interface SsoProvider {
  id: string;
  name: string;
  kind: string;
}

const SESSION = "nexus.session";
const TENANTS = "nexus.tenants";
// Refresh tokens in memory only (see above), per signed-in identity: switching tenants holds two for a moment.
const refreshTokens = new Map<string, string>();
const identity = (s: { tenant: string; subject: string }) => `${s.tenant}|${s.subject}`;
// A sign-out still on its way: a sign-in waits for it, since its answer clears the session cookies.
let signingOut: Promise<unknown> = Promise.resolve();

export function getSession(): Session | null {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION) ?? "null");
    return s && typeof s.token === "string" ? (s as Session) : null;
  } catch {
    return null;
  }
}
export function setSession(session: Session): void {
  sessionStorage.setItem(SESSION, JSON.stringify(session));
  rememberTenant({ tenant: session.tenant, email: session.email, method: session.method });
}
export function clearSession(): void {
  sessionStorage.removeItem(SESSION);
}
export function getToken(): string | null {
  return getSession()?.token ?? null;
}
export function authHeaders(): Record<string, string> {
  const t = getToken();
  return t ? { authorization: `Bearer ${t}` } : {};
}

export function knownTenants(): KnownTenant[] {
  try {
    const list = JSON.parse(localStorage.getItem(TENANTS) ?? "[]");
    return Array.isArray(list) ? list.filter((t) => typeof t?.tenant === "string") : [];
  } catch {
    return [];
  }
}
function rememberTenant(known: KnownTenant): void {
  const others = knownTenants().filter((t) => t.tenant !== known.tenant);
  localStorage.setItem(TENANTS, JSON.stringify([known, ...others].slice(0, 10)));
}
export function forgetTenant(tenant: string): void {
  localStorage.setItem(TENANTS, JSON.stringify(knownTenants().filter((t) => t.tenant !== tenant)));
}

export class HttpError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

/** fetch JSON from the API with the caller's bearer token; errors carry the API's message. */
export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers ?? {}) } });
  const text = await res.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  if (res.status === 401 && getSession()) sessionRefused();
  if (!res.ok) throw new HttpError(res.status, body?.error?.message ?? body?.detail ?? `${res.status} ${res.statusText}`);
  return body as T;
}

/** The API refused this tab's credentials (expired, revoked, signed out elsewhere): App renews or signs out. */
export const SESSION_REFUSED = "nexus:session-refused";
export function sessionRefused(): void {
  window.dispatchEvent(new Event(SESSION_REFUSED));
}

/** POST JSON to /v1/auth: only the given credentials travel, and the cookies unless `cookies` is "omit". */
async function post(path: string, body: unknown, headers: Record<string, string> = {},
  cookies: RequestCredentials = "same-origin"): Promise<any> {
  const res = await fetch(path, { method: "POST", headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body), credentials: cookies });
  if (res.status === 204) return null;
  const answer = await res.json().catch(() => null);
  if (!res.ok) throw new HttpError(res.status, answer?.error?.message ?? `${res.status} ${res.statusText}`);
  return answer;
}

interface TokenAnswer {
  access_token: string;
  expires_in: number;
  refresh_token: string;
  user_id: string;
  tenant_id: string;
}

function fromTokens(answer: TokenAnswer, method: SignInMethod, email?: string): Session {
  const session: Session = { token: answer.access_token, method, tenant: answer.tenant_id,
    subject: `user:${answer.user_id}`, email, expiresAt: Date.now() + answer.expires_in * 1000 };
  refreshTokens.set(identity(session), answer.refresh_token);
  return session;
}
const refreshBody = (s: Session) => (refreshTokens.has(identity(s)) ? { refresh_token: refreshTokens.get(identity(s)) } : {});

/** POST /v1/auth/sign-in; a wrong tenant, email or password all answer the same 401. */
export async function signInWithPassword(tenant: string, email: string, password: string): Promise<Session> {
  await signingOut;
  const answer: TokenAnswer = await post("/v1/auth/sign-in", { tenant: tenant.trim(), email: email.trim(), password });
  return fromTokens(answer, "password", email.trim());
}

/** An API key is checked against GraphQL `me`, which also names its tenant, before it is kept. */
export async function signInWithKey(key: string): Promise<Session> {
  const token = key.trim();
  const res = await fetch("/graphql", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: "{ me { tenantId subject } }" }),
  });
  const body = await res.json().catch(() => null);
  if (!res.ok || body?.errors || !body?.data?.me) throw new Error(body?.errors?.[0]?.message ?? `HTTP ${res.status}`);
  return { token, method: "key", tenant: body.data.me.tenantId, subject: body.data.me.subject };
}

/** A new access token in the same session family (POST /v1/auth/refresh spends the refresh token). One at a
 * time: a refresh token presented twice is taken for a stolen copy and revokes the whole family. */
let renewing: Promise<Session> | null = null;
export function refreshSession(session: Session): Promise<Session> {
  renewing ??= post("/v1/auth/refresh", refreshBody(session))
    .then((answer: TokenAnswer) => {
      const renewed = fromTokens(answer, session.method, session.email);
      // After a reload only the cookie is left, and another tab may have put its own session there since.
      if (identity(renewed) !== identity(session)) throw new Error("the session cookie belongs to another sign-in");
      return renewed;
    })
    .finally(() => { renewing = null; });
  return renewing;
}

/** After an SSO redirect the API has set the session cookies only: trade the refresh cookie for tokens. */
export async function sessionFromCookie(): Promise<Session> {
  return fromTokens(await post("/v1/auth/refresh", {}), "sso");
}

/** POST /v1/auth/sign-out revokes the session's whole family and clears the cookies; API keys stay valid.
 * `replaced`: a newer session (tenant switch) already owns the cookies, so they are neither sent nor cleared
 * and the old session is named by its own tokens only. */
export function signOut(session: Session | null, replaced = false): Promise<void> {
  const done = leaveSession(session, replaced);
  signingOut = done.catch(() => undefined);
  return done;
}
async function leaveSession(session: Session | null, replaced: boolean): Promise<void> {
  try {
    if (session && session.method !== "key") {
      await post("/v1/auth/sign-out", refreshBody(session), { authorization: `Bearer ${session.token}` },
        replaced ? "omit" : "same-origin");
    }
  } finally {
    if (session) refreshTokens.delete(identity(session));
    if (!replaced) clearSession();
  }
}

/** The tenant's single-sign-on providers; none when the tenant has none or the API does not offer SSO. */
export async function ssoProviders(tenant: string, signal?: AbortSignal): Promise<SsoProvider[]> {
  const res = await fetch(`/v1/auth/sso/providers?tenant=${encodeURIComponent(tenant)}`, { signal });
  if (!res.ok) return [];
  const list = await res.json().catch(() => []);
  return Array.isArray(list) ? list.filter((p) => p && typeof p.id === "string" && typeof p.name === "string") : [];
}

// Set before leaving for the identity provider, so that coming back (same tab) asks for the session.
const SSO_PENDING = "nexus.sso-pending";
export function ssoLoginUrl(provider: SsoProvider, tenant: string): string {
  return `/v1/auth/sso/${encodeURIComponent(provider.id)}/login?tenant=${encodeURIComponent(tenant)}&next=/`;
}
export function markSsoPending(tenant: string): void {
  sessionStorage.setItem(SSO_PENDING, tenant);
}
/** The tenant of an SSO sign-in this tab started and has not finished (read once). */
export function takeSsoPending(): string | null {
  const tenant = sessionStorage.getItem(SSO_PENDING);
  sessionStorage.removeItem(SSO_PENDING);
  return tenant;
}
