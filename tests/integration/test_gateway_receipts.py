"""Receipts: every response names its ledger entry, and GET /v1/receipts/{id} proves it offline."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import orjson

from domain.canonical import canonical_json
from domain.checkpoint import Checkpoint
from domain.entry import entry_bytes, entry_hash
from domain.hashing import hasher_named
from domain.merkle import verify_inclusion
from tests.fakes.harness import gw, upstreams  # noqa: F401 - fixtures

HELLO = [{"role": "user", "content": "Say hello"}]


def verify_offline(proof: dict) -> None:
    """What a third party does with nothing but the response and the pure verifier."""
    hasher = hasher_named(proof["ledger"]["hash_alg"])
    e = proof["entry"]
    canonical = entry_bytes(
        ledger_id=proof["ledger"]["ledger_id"], position=e["position"], event_id=e["event_id"],
        tenant_id=e["tenant_id"], stream_id=e["stream_id"], stream_version=e["stream_version"], type=e["type"],
        schema_version=e["schema_version"], payload=canonical_json(e["payload"]), metadata=canonical_json(e["metadata"]),
        recorded_at=e["recorded_at"],
    )
    leaf = entry_hash(hasher, canonical)
    assert leaf.hex() == proof["entry_hash"]
    checkpoint = Checkpoint.from_json(proof["checkpoint"])
    checkpoint.verify(bytes.fromhex(proof["public_key"]["public_key"]))
    inclusion = proof["inclusion_proof"]
    assert inclusion["tree_size"] == checkpoint.tree_size >= e["position"]
    verify_inclusion(hasher, inclusion["leaf_index"], checkpoint.tree_size, leaf,
                     [bytes.fromhex(h) for h in inclusion["hashes"]], checkpoint.root)


def test_a_receipt_is_proven_by_an_inclusion_proof_and_a_signed_checkpoint(gw):
    gw.deploy("primary")
    client = gw.client()
    for _ in range(20):  # a tree with some depth
        raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO)
    event_id = raw.headers["nexus-receipt"].split("event_id=")[1].split(";")[0]
    with gw.http() as http:
        proof = http.get(f"/v1/receipts/{event_id}").json()
    assert proof["entry"]["type"] == "InferenceCompleted" and proof["entry"]["event_id"] == event_id
    verify_offline(proof)
    # A tampered entry no longer verifies.
    proof["entry"]["payload"]["cost_micros"] += 1
    try:
        verify_offline(proof)
    except AssertionError:
        pass
    else:
        raise AssertionError("a changed cost verified")


def test_the_pending_receipt_of_a_stream_resolves_once_the_stream_ended(gw):
    gw.deploy("primary")
    with gw.http() as http:
        with http.stream("POST", "/v1/chat/completions",
                         json={"model": "gpt-test", "messages": HELLO, "stream": True}) as response:
            event_id = response.headers["nexus-receipt"].split("event_id=")[1].split(";")[0]
            response.read()
        proof = http.get(f"/v1/receipts/{event_id}").json()
    assert proof["entry"]["payload"]["finish"] == "complete"
    verify_offline(proof)


def test_another_tenants_receipt_is_not_found(gw):
    gw.deploy("primary")
    raw = gw.client().chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO)
    event_id = raw.headers["nexus-receipt"].split("event_id=")[1].split(";")[0]
    gw.container.identity.create_tenant("globex")
    outsider, _ = gw.container.identity.issue_key("globex", ["read"])
    no_read, _ = gw.container.identity.issue_key("acme", ["inference"])
    with gw.http() as http:
        theirs = http.get(f"/v1/receipts/{event_id}", headers={"authorization": f"Bearer {outsider.token}"})
        unknown = http.get("/v1/receipts/00000000-0000-4000-8000-000000000000")
        garbage = http.get("/v1/receipts/not-a-uuid")
        forbidden = http.get(f"/v1/receipts/{event_id}", headers={"authorization": f"Bearer {no_read.token}"})
    assert theirs.status_code == unknown.status_code == garbage.status_code == 404
    assert theirs.json() == {**unknown.json(), "error": {**unknown.json()["error"],
                                                         "message": theirs.json()["error"]["message"]}}
    assert forbidden.status_code == 403


def test_a_failure_has_a_receipt_too(gw):
    from tests.fakes.upstream import status

    upstream = gw.deploy("primary", max_retries=0)
    gw.script(upstream).then(status(500))
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": HELLO})
        event_id = response.headers["nexus-receipt"].split("event_id=")[1].split(";")[0]
        proof = http.get(f"/v1/receipts/{event_id}").json()
    assert response.status_code == 502 and proof["entry"]["type"] == "InferenceFailed"
    verify_offline(proof)
    assert orjson.loads(gw.events("InferenceFailed")[0].payload)["reason"] == "upstream_error"
