import { useQuery } from "urql";
import { errorText } from "../gql";
import { Card, cls, Empty, ErrorBox, Loading } from "../ui";

const DEPLOYMENTS = `{ deployments { name modelName provider model region priority hasCredentials credentialFacts } }`;
const DAY_MS = 24 * 3600 * 1000;
const WARN_DAYS = 30; // as `nexus deployments list` flags them

type Facts = {
  kind: string;
  access_key_id?: string;
  client_id?: string;
  certificate_thumbprint_s256?: string;
  certificate_not_after?: string;
};
type Deployment = {
  name: string; modelName: string; provider: string; model: string; region: string; priority: number;
  hasCredentials: boolean; credentialFacts: Facts | null;
};

const KINDS: Record<string, string> = {
  api_key: "API key", bedrock_api_key: "Bedrock API key", aws_key_pair: "AWS key pair",
  entra_secret: "Entra ID secret", entra_certificate: "Entra ID certificate",
};

/** When a certificate stops signing in, and a warning once that is less than WARN_DAYS away (or past). */
function Expiry({ notAfter }: { notAfter: string }) {
  const left = new Date(notAfter).getTime() - Date.now();
  const until = notAfter.slice(0, 10);
  if (left <= 0) return <span className="rounded-full bg-red-100 px-2 py-0.5 text-xs text-bad" role="alert">expired {until}</span>;
  if (left < WARN_DAYS * DAY_MS) {
    const days = Math.floor(left / DAY_MS);
    return <span className="rounded-full bg-amber-100 px-2 py-0.5 text-xs text-amber-800" data-testid="expires-soon">
      expires in {days} day{days === 1 ? "" : "s"} ({until})</span>;
  }
  return <span className="text-muted">until {until}</span>;
}

function Credential({ d }: { d: Deployment }) {
  if (!d.hasCredentials) return <span className="text-muted">none</span>;
  const f = d.credentialFacts;
  if (!f) { // configured before credentials had facts
    return <span title="Its kind was not recorded when it was configured: `nexus deployments describe-credentials` records it">
      sealed</span>;
  }
  return (
    <span className="inline-flex flex-wrap items-center gap-1.5">
      <span>{KINDS[f.kind] ?? f.kind}</span>
      {f.access_key_id && <code>{f.access_key_id}</code>}
      {f.certificate_thumbprint_s256 && <code title={`SHA-256 thumbprint ${f.certificate_thumbprint_s256}`}>
        {f.certificate_thumbprint_s256.slice(0, 12)}…</code>}
      {f.certificate_not_after && <Expiry notAfter={f.certificate_not_after} />}
    </span>
  );
}

/** The tenant's deployments, read-only: which credential each holds (never the credential itself). */
export default function DeploymentsCard() {
  const [{ data, fetching, error }, refetch] = useQuery({ query: DEPLOYMENTS, requestPolicy: "network-only" });
  const rows: Deployment[] = data?.deployments ?? [];
  return (
    <Card title="Deployments">
      {error && <ErrorBox message={errorText(error)} onRetry={() => refetch({ requestPolicy: "network-only" })} />}
      {fetching && !data && <Loading what="the deployments" />}
      {data && rows.length === 0 && <Empty>No deployments yet: add one with <code>nexus deployments add</code>.</Empty>}
      {rows.length > 0 && (
        <div className="overflow-x-auto"><table className={cls.table} aria-label="Deployments">
          <thead><tr><th>Model name</th><th>Deployment</th><th>Provider</th><th>Upstream model</th><th>Region</th>
            <th>Priority</th><th>Credential</th></tr></thead>
          <tbody>{rows.map((d) => (
            <tr key={d.name} data-testid={`deployment-${d.name}`}>
              <td>{d.modelName}</td><td>{d.name}</td><td>{d.provider}</td><td><code>{d.model}</code></td>
              <td>{d.region || "–"}</td><td>{d.priority}</td><td><Credential d={d} /></td>
            </tr>
          ))}</tbody>
        </table></div>
      )}
    </Card>
  );
}
