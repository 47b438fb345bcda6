"""The GraphQL API over HTTP: read models answer queries, commands append events and return receipts,
bad input comes back as typed errors that name the field and write nothing."""
# ruff: noqa: F811  (fixtures imported from the harness are parameters here)

from __future__ import annotations

import datetime as dt

from domain.merkle import verify_consistency, verify_inclusion
from tests.integration.test_graphql_harness import api  # noqa: F401 - fixture
from tests.integration.test_projections_support import completed


def around_now() -> dict[str, str]:
    """An hour either side of now, and the first and last day that covers. Taken when a test asks, not at
    import: a run that crossed midnight after collecting the tests asked for the day before its events."""
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
    return {"start": start.isoformat(), "end": end.isoformat(), "first_day": start.date().isoformat(),
            "last_day": end.date().isoformat()}


def test_usage_timeseries_summary_and_costs_come_from_the_read_models_for_the_callers_tenant_only(api):
    api.append(completed(tenant="acme", latency_us=100_000, cost_micros=1_000),
               completed(tenant="acme", latency_us=300_000, cost_micros=2_000, model="gpt-4o-mini"),
               completed(tenant="globex", cost_micros=999_999))
    api.project()
    span = around_now()
    data = api.data("""query($start: DateTime!, $end: DateTime!) {
        usageTimeseries(granularity: MINUTE, start: $start, end: $end) { start requests costMicros p50Us p99Us }
        usageSummary(start: $start, end: $end, model: "gpt-4o") { requests costMicros latencyMaxUs }
    }""", {"start": span["start"], "end": span["end"]})
    assert sum(b["requests"] for b in data["usageTimeseries"]) == 2
    assert sum(b["costMicros"] for b in data["usageTimeseries"]) == 3_000
    assert all(b["p50Us"] <= b["p99Us"] for b in data["usageTimeseries"])
    assert data["usageSummary"] == {"requests": 1, "costMicros": 1_000, "latencyMaxUs": 100_000}

    report = api.data("query($f: Date!, $l: Date!) { costReport(firstDay: $f, lastDay: $l) { lines { model costMicros }"
                      " totals { currency costMicros } } }", {"f": span["first_day"], "l": span["last_day"]})["costReport"]
    assert sorted((line["model"], line["costMicros"]) for line in report["lines"]) == [("gpt-4o", 1_000), ("gpt-4o-mini", 2_000)]
    assert report["totals"] == [{"currency": "USD", "costMicros": 3_000}]


def test_costs_tokens_and_latencies_beyond_32_bits_come_back_exact(api):
    # GraphQL's Int is 32-bit: USD 2,147.48 in micro-units, or a 36-minute stream in microseconds.
    big = {"tokens_in": 3_000_000_000, "tokens_out": 2_500_000_000, "tokens_cached": 2_200_000_000,
           "latency_us": 2_400_000_000, "cost_micros": 9_000_000_000_123}
    api.append(completed(tenant="acme", **big), completed(tenant="acme", **big))
    api.project()
    data = api.data("""query($start: DateTime!, $end: DateTime!, $first_day: Date!, $last_day: Date!) {
        usageTimeseries(granularity: MINUTE, start: $start, end: $end) { costMicros tokensIn latencyMaxUs p99Us }
        usageSummary(start: $start, end: $end) { costMicros tokensIn tokensOut tokensCached latencyMaxUs }
        costReport(firstDay: $first_day, lastDay: $last_day) { lines { costMicros tokensIn } totals { costMicros } }
        inferences(first: 2) { edges { node { costMicros tokensIn latencyMs } } }
    }""", around_now())
    assert sum(b["costMicros"] for b in data["usageTimeseries"]) == 18_000_000_000_246
    assert data["usageSummary"] == {"costMicros": 18_000_000_000_246, "tokensIn": 6_000_000_000,
                                    "tokensOut": 5_000_000_000, "tokensCached": 4_400_000_000,
                                    "latencyMaxUs": 2_400_000_000}
    assert data["costReport"]["lines"] == [{"costMicros": 18_000_000_000_246, "tokensIn": 6_000_000_000}]
    assert data["costReport"]["totals"] == [{"costMicros": 18_000_000_000_246}]
    assert [e["node"] for e in data["inferences"]["edges"]] == [
        {"costMicros": 9_000_000_000_123, "tokensIn": 3_000_000_000, "latencyMs": 2_400_000.0}] * 2


BY_STREAM = "query($s: String!) { ledgerEntries(streamId: $s) { position } }"
PROVE = "query($id: UUID!) { inclusionProof(eventId: $id) { position treeSize leafHash root path } }"


def test_ledger_entries_by_stream_and_by_position_hold_only_the_callers_events(api):
    mine, theirs = api.append(completed("r1", tenant="acme"), completed("r2", tenant="globex"))
    api.project()
    by_stream = api.data(BY_STREAM.replace("position", "position type entryHash payload"), {"s": mine.stream_id})
    assert [(e["position"], e["entryHash"]) for e in by_stream["ledgerEntries"]] == [(mine.position, mine.entry_hash.hex())]
    by_position = api.data("{ ledgerEntries(fromPosition: 1, limit: 500) { position stream: streamId } }")
    positions = [e["position"] for e in by_position["ledgerEntries"]]
    assert mine.position in positions and theirs.position not in positions
    assert api.data(BY_STREAM, {"s": theirs.stream_id})["ledgerEntries"] == []


def test_an_inclusion_proof_of_an_own_event_verifies_and_another_tenants_event_is_not_found(api):
    mine, theirs = api.append(completed(tenant="acme"), completed(tenant="globex"))
    api.project()
    proof = api.data(PROVE, {"id": str(mine.event_id)})["inclusionProof"]
    hasher = api.container.ledger.genesis().hasher
    verify_inclusion(hasher, proof["position"] - 1, proof["treeSize"], bytes.fromhex(proof["leafHash"]),
                     [bytes.fromhex(h) for h in proof["path"]], bytes.fromhex(proof["root"]))
    body = api.gql(PROVE, {"id": str(theirs.event_id)}).json()
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert str(theirs.event_id) in body["errors"][0]["message"]


def test_signed_checkpoints_and_a_consistency_proof_between_two_of_them(api):
    first = api.container.signer.sign_now()
    api.append(completed(), completed())
    second = api.container.signer.sign_now()
    data = api.data("""query($a: Int!, $b: Int!) { checkpoints(limit: 5) { treeSize root keyId signature }
                                                 consistencyProof(size1: $a, size2: $b) { root1 root2 path } }""",
                    {"a": first.tree_size, "b": second.tree_size})
    assert [c["treeSize"] for c in data["checkpoints"]][:2] == [second.tree_size, first.tree_size]
    p = data["consistencyProof"]
    assert (p["root1"], p["root2"]) == (first.root.hex(), second.root.hex())
    verify_consistency(api.container.ledger.genesis().hasher, first.tree_size, second.tree_size,
                       [bytes.fromhex(h) for h in p["path"]], first.root, second.root)


CREATE_KEY = """mutation($name: String!, $scopes: [String!]!) {
    createApiKey(input: {name: $name, scopes: $scopes}) { secret key { keyId scopes } receipt { position eventId entryHash } } }"""


def test_create_api_key_shows_the_secret_once_records_a_receipt_and_revoke_stops_it(api):
    created = api.data(CREATE_KEY, {"name": "ci", "scopes": ["read"]})["createApiKey"]
    [recorded] = api.container.ledger.read(created["receipt"]["position"], 1)
    assert (recorded.type, str(recorded.event_id), recorded.entry_hash.hex()) == (
        "ApiKeyIssued", created["receipt"]["eventId"], created["receipt"]["entryHash"])
    assert api.data("{ me { subject } }", token=created["secret"])["me"]["subject"] == f"key:{created['key']['keyId']}"
    api.project()
    listed = api.gql("{ apiKeys { keyId scopes revoked } }").text
    secret_part = created["secret"].split("_", 2)[2]  # nx_<key id>_<secret>; the secret may hold "_" itself
    assert created["key"]["keyId"] in listed and secret_part not in listed

    revoked = api.data('mutation($k: String!) { revokeApiKey(keyId: $k, reason: "leaked") { position } }',
                       {"k": created["key"]["keyId"]})
    assert revoked["revokeApiKey"]["position"] == recorded.position + 1
    assert api.gql("{ me { subject } }", token=created["secret"]).status_code == 401


def test_invalid_input_is_a_typed_error_naming_the_field_and_writes_nothing(api):
    before = api.size()
    body = api.gql(CREATE_KEY, {"name": "x", "scopes": ["root"]}).json()
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "scopes"}
    assert "must be a non-empty subset of" in body["errors"][0]["message"]
    body = api.gql('mutation { revokeApiKey(keyId: "000000000000") { position } }').json()
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    body = api.gql("query($s: DateTime!, $e: DateTime!) { usageSummary(start: $s, end: $e) { requests } }",
                   {"s": around_now()["end"], "e": around_now()["start"]}).json()
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "end"}
    assert api.size() == before


def test_a_key_cannot_create_a_key_more_powerful_than_itself(api):
    reader = api.data(CREATE_KEY, {"name": "r", "scopes": ["read"]})["createApiKey"]["secret"]
    body = api.gql(CREATE_KEY, {"name": "x", "scopes": ["read"]}, token=reader).json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    developer_like = api.data(CREATE_KEY, {"name": "d", "scopes": ["read", "inference"]})["createApiKey"]["secret"]
    assert api.gql(CREATE_KEY, {"name": "y", "scopes": ["admin"]}, token=developer_like).json()["errors"]


def test_only_the_platform_tenant_creates_tenants(api):
    create = 'mutation { createTenant(input: {tenantId: "initech", name: "Initech"}) { position streamId } }'
    body = api.gql(create).json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    api.container.identity.create_tenant("platform")
    root = api.container.identity.issue_key("platform", ["admin"])[0].token
    assert api.data(create, token=root)["createTenant"]["streamId"] == "tenant-initech"
    again = api.gql(create, token=root).json()
    assert again["errors"][0]["extensions"]["code"] == "CONFLICT"


def test_deployments_are_configured_listed_without_credentials_and_removed(api):
    configure = """mutation { configureDeployment(input: {name: "primary", provider: "openai", model: "gpt-4o",
        modelName: "gpt", apiKey: "sk-very-secret", price: {input: 2500000, output: 10000000, currency: "USD",
        version: "2026-11"}}) { position streamId } }"""
    assert api.data(configure)["configureDeployment"]["streamId"] == "deployments-acme"
    listed = api.gql("{ deployments { name modelName hasCredentials price credentialFacts } }").text
    assert '"hasCredentials":true' in listed and "sk-very-secret" not in listed
    assert '"credentialFacts":{"kind":"api_key"}' in listed
    bad_certificate = configure.replace('provider: "openai"', 'provider: "azure"').replace(
        'model: "gpt-4o",', 'model: "gpt-4o", baseUrl: "https://a.openai.azure.com/openai/deployments/x?api-version=1",'
    ).replace("sk-very-secret", "entra-cert:contoso.onmicrosoft.com:0f3a1c52-8d3e-4a7b-9c1d-2e5f6a7b8c9d:bm90IGEgY2VydA==")
    refused = api.gql(bad_certificate).json()["errors"][0]
    assert refused["extensions"]["code"] == "BAD_USER_INPUT" and "PKCS#12" in refused["message"]
    assert "bm90IGEgY2VydA" not in refused["message"]
    assert api.data("{ deployments { name } }", tenant="globex")["deployments"] == []
    bad = api.gql(configure.replace('currency: "USD"', 'currency: "dollars"')).json()
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert api.data('mutation { removeDeployment(name: "primary") { position } }')["removeDeployment"]["position"]


def test_a_tenants_recording_mode_is_read_and_set_and_a_wrong_one_is_refused(api):
    assert api.data("{ recordingMode }")["recordingMode"] == "deferred"
    receipt = api.data('mutation { setRecordingMode(mode: "strict") { position } }')["setRecordingMode"]
    assert receipt["position"] and api.data("{ recordingMode }")["recordingMode"] == "strict"
    assert api.data("{ recordingMode }", tenant="globex")["recordingMode"] == "deferred"
    bad = api.gql('mutation { setRecordingMode(mode: "sometimes") { position } }').json()
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "one of ['deferred', 'strict']" in bad["errors"][0]["message"]


def test_projection_status_tenant_and_me(api):
    data = api.data("{ projections { name checkpoint head stopped } tenant { tenantId name } me { tenantId } }")
    assert {p["name"] for p in data["projections"]} == {"usage", "costs", "audit_index", "inference_log"}
    assert data["tenant"] == {"tenantId": "acme", "name": "acme"} and data["me"] == {"tenantId": "acme"}
