import { useState } from "react";
import { useMutation, useQuery } from "urql";
import { errorText } from "../gql";
import { Card, cls, ErrorBox, Loading } from "../ui";
import DeploymentsCard from "./DeploymentsCard";

const MODE = `{ recordingMode }`;
const SET_MODE = `mutation SetMode($mode: String!) { setRecordingMode(mode: $mode) { position } }`;
const MODES = [
  { value: "deferred", label: "Deferred", help: "each request is recorded while its upstream call is in flight (the default)" },
  { value: "strict", label: "Strict", help: "each request is committed to the ledger before any upstream call: none goes unrecorded, about 1 ms more per request" },
];

export default function Settings() {
  const [{ data, fetching, error }, refetch] = useQuery({ query: MODE, requestPolicy: "network-only" });
  const [saved, save] = useMutation(SET_MODE);
  const [position, setPosition] = useState<number | null>(null);
  // The choice shows at once; a refused change (a role without deployments.write) puts the recorded one back.
  const [chosen, setChosen] = useState<string | null>(null);
  const current: string | undefined = chosen ?? data?.recordingMode;

  async function choose(mode: string) {
    setPosition(null);
    setChosen(mode);
    const r = await save({ mode });
    if (r.error) {
      setChosen(null);
    } else {
      setPosition(r.data.setRecordingMode.position);
      refetch({ requestPolicy: "network-only" });
    }
  }

  return (
    <div className={cls.page}>
      <h1 className={cls.h1}>Settings</h1>
      <Card title="Recording">
        {error && <ErrorBox message={errorText(error)} onRetry={() => refetch({ requestPolicy: "network-only" })} />}
        {fetching && !data && <Loading what="the recording mode" />}
        {current && (
          <fieldset className="grid gap-2" aria-label="Recording mode">
            <legend className="mb-1 text-sm text-muted">When your inferences are first written to the ledger</legend>
            {MODES.map((m) => (
              <label key={m.value} className="flex items-start gap-2 text-sm">
                <input type="radio" name="recording" value={m.value} checked={current === m.value}
                  disabled={saved.fetching} onChange={() => choose(m.value)} />
                <span><strong>{m.label}</strong>: {m.help}</span>
              </label>
            ))}
          </fieldset>
        )}
        {saved.error && <ErrorBox message={errorText(saved.error)} />}
        {position !== null && (
          <p role="status" data-testid="recording-saved" className="mt-2 text-sm text-ok">
            Recorded at ledger position {position}.
          </p>
        )}
      </Card>
      <DeploymentsCard />
    </div>
  );
}
