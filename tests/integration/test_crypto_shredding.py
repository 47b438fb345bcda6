"""The proof of crypto-shredding: after erasure the content is gone everywhere it travelled, and the proofs hold.

One story, end to end over real PostgreSQL and NATS: inference events whose prompts and completions are
sealed for two subjects of tenant acme are appended, relayed to JetStream, projected into a read model
(from the NATS messages) and exported in an audit bundle. Then subject user-42 is erased. Afterwards:
- the plaintext is nowhere: not in any database table, any NATS message, any read-model row, the bundle;
- every envelope of user-42, wherever it is read from, raises SubjectErased; user-43's still opens;
- the chain, every inclusion proof, and the bundle exported before the erasure all still verify.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, Text, insert, select

from adapters.keystore import FileKeyStore
from adapters.nats import codec
from adapters.postgres.checkpoint_store import PostgresCheckpointStore
from adapters.postgres.keystore import PostgresKeyStore
from application.audit_export import ExportRequest, export_bundle
from application.privacy import PrivacyService
from application.signer import CheckpointSigner
from domain.audit import dump_bundle, load_bundle, verify_bytes
from domain.inference import InferenceCompleted, InferenceRequested, inference_stream
from domain.ledger import NewEvent, RecordedEvent
from domain.merkle import verify_consistency, verify_inclusion
from domain.sealing import MasterKey, SubjectErased, is_sealed
from domain.verify import verify_rows
from projections.audit_index import AuditIndex
from projections.base import Projection, on
from projections.store import ProjectionStore
from tests.integration.nats_helpers import assert_exactly_once_in_order
from tests.integration.test_relay import _relay_until_caught_up, _stream_messages

ERASED, KEPT = "user-42", "user-43"
CONTENT = {
    ERASED: {
        "prompt": "SECRET-42 my IBAN is CH93 0076 2011 6238 5295 7, please check my last transfer",
        "completion": "SECRET-42 The transfer to Jürg Müller of 4,200 CHF arrived on 3 March.",
    },
    KEPT: {
        "prompt": "KEPT-43 what is the capital of Switzerland?",
        "completion": "KEPT-43 Bern is the federal city.",
    },
}
SEALED_FIELDS = ("prompt", "completion")


# --- a read model that keeps the sealed content, as a conversation history would ----------------------

METADATA = MetaData()
sealed_content = Table(
    "sealed_content",
    METADATA,
    Column("position", BigInteger, primary_key=True),
    Column("field", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("subject_id", Text, nullable=False),
    Column("envelope", Text, nullable=False),
)


class SealedContent(Projection[list]):
    name = "sealed_content_test"
    version = 1
    metadata = METADATA

    def new_batch(self) -> list:
        return []

    @on("InferenceRequested")
    def requested(self, batch: list, event: RecordedEvent, payload: dict[str, Any]) -> None:
        self.completed(batch, event, payload)

    @on("InferenceCompleted")
    def completed(self, batch: list, event: RecordedEvent, payload: dict[str, Any]) -> None:
        for field in SEALED_FIELDS:
            if is_sealed(payload.get(field)):
                batch.append({"position": event.position, "field": field, "tenant_id": event.tenant_id,
                              "subject_id": payload[field]["subject"], "envelope": json.dumps(payload[field])})

    def flush(self, conn: Connection, batch: list) -> None:
        if batch:
            conn.execute(insert(sealed_content), batch)

    def report(self, conn: Connection) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in conn.execute(select(sealed_content).order_by(sealed_content.c.position))]


# --- the world --------------------------------------------------------------------------------------


@pytest.fixture
def privacy(database, ledger):
    with PostgresKeyStore(database.app_url, MasterKey.generate()) as keys:
        yield PrivacyService(keys, ledger)


@pytest.fixture
def checkpoints(database):
    return PostgresCheckpointStore(database.app_url)


@pytest.fixture
def signer(ledger, checkpoints, tmp_path):
    return CheckpointSigner(ledger, FileKeyStore(tmp_path / "keys"), checkpoints)


@pytest.fixture
def store(database):
    with ProjectionStore(database.app_url) as opened:
        yield opened


def an_inference(privacy: PrivacyService, tenant: str, subject: str, content: dict[str, str]) -> list[NewEvent]:
    """What the gateway records for one call: the request with the sealed prompt, the completion with both."""
    rid = uuid.uuid4().hex[:12]
    prompt = privacy.seal(tenant, subject, content["prompt"])
    requested = InferenceRequested(rid, "openai", "gpt-4o", "default", "eu-west", "k1", False)
    completed = InferenceCompleted(rid, "openai", "gpt-4o", "default", "eu-west", 30, 12, 0, 0, 250_000, 90_000,
                                   1_200, "USD", "2026-11")
    return [
        NewEvent(inference_stream(rid), requested.type, {**requested.payload(), "prompt": prompt}, tenant_id=tenant),
        NewEvent(inference_stream(rid), completed.type,
                 {**completed.payload(), "prompt": prompt,
                  "completion": privacy.seal(tenant, subject, content["completion"])}, tenant_id=tenant),
    ]


def needles(text: str) -> list[bytes]:
    """The ways a plaintext could sit in stored bytes: UTF-8, JSON-escaped, hex (bytea as text)."""
    return [text.encode(), json.dumps(text)[1:-1].encode(), text.encode().hex().encode()]


def every_row_in_the_database(admin_url: str) -> bytes:
    """The text form of every row of every table in every schema of the test database."""
    out = []
    with psycopg.connect(admin_url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert {"ledger", "keystore"} <= {schema for schema, _ in tables}
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            out += [row[0].encode() for row in conn.execute(query)]
    return b"\n".join(out)


def envelopes_in(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [payload[f] for f in SEALED_FIELDS if is_sealed(payload.get(f))]


def by_subject(envelopes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {ERASED: [], KEPT: []}
    for envelope in envelopes:
        grouped[envelope["subject"]].append(envelope)
    return grouped


def where_the_content_went(ledger, store, nats_url, stream_names, bundle_bytes: bytes) -> dict[str, list[dict]]:
    """Every envelope as read back from each place: ledger rows, NATS bodies, the read model, the bundle."""
    messages = asyncio.run(_stream_messages(nats_url, stream_names))
    with store.reading(SealedContent.name) as conn:
        rows = SealedContent().report(conn)
    return {
        "ledger": [e for row in ledger.iter_entries() for e in envelopes_in(orjson.loads(row.payload))],
        "nats": [e for _, body, _ in messages for e in envelopes_in(orjson.loads(body)["payload"])],
        "read model": [json.loads(row["envelope"]) for row in rows],
        "bundle": [e for entry in load_bundle(bundle_bytes).entries for e in envelopes_in(json.loads(entry.payload))],
    }


def relay_and_project(ledger, store, nats_url, stream_names) -> list[tuple[int, bytes, dict[str, str]]]:
    """Relay the ledger to JetStream, then feed both projections from the NATS messages themselves."""
    asyncio.run(_relay_until_caught_up(ledger, nats_url, stream_names))
    messages = asyncio.run(_stream_messages(nats_url, stream_names))
    for projection in (SealedContent(), AuditIndex()):
        done = store.checkpoint(projection.name)
        store.apply(projection, [codec.decode(body, headers) for seq, body, headers in messages if seq > done])
    return messages


# --- the proof --------------------------------------------------------------------------------------


def test_after_erasure_the_content_is_gone_everywhere_it_travelled_and_every_proof_still_holds(
    ledger, database, privacy, checkpoints, signer, store, nats_url, stream_names, tmp_path
):
    # Two calls per subject, interleaved, plus a tenant that has nothing to do with it.
    for _ in range(2):
        for subject in (ERASED, KEPT):
            ledger.append(an_inference(privacy, "acme", subject, CONTENT[subject]))
    ledger.append([NewEvent("tenant-globex", "TenantCreated", {"tenant_id": "globex", "name": "Globex"},
                            tenant_id="globex")])
    signer.sign_now()  # the first signature records a key rotation; sign before, so the bundle covers all
    relay_and_project(ledger, store, nats_url, stream_names)
    before = export_bundle(ledger, checkpoints, signer, ExportRequest())
    bundle_before = tmp_path / "before.nexus"
    bundle_before.write_bytes(dump_bundle(before))
    size_before = ledger.head().size

    # Before the erasure the content is recoverable from every place, though stored nowhere in clear.
    seen = where_the_content_went(ledger, store, nats_url, stream_names, bundle_before.read_bytes())
    for place, envelopes in seen.items():
        grouped = by_subject(envelopes)
        assert len(grouped[ERASED]) == len(grouped[KEPT]) == 6, place  # 2 calls x (prompt, prompt, completion)
        assert {privacy.open("acme", e) for e in grouped[ERASED]} == set(CONTENT[ERASED].values()), place
    with psycopg.connect(database.admin_url) as conn:
        [(wrapped_key,)] = conn.execute(
            "SELECT wrapped FROM keystore.data_keys WHERE subject_id = %s", (ERASED,)).fetchall()
    # Controls: the searches below do find what is stored, in text and in bytea columns alike.
    everything = every_row_in_the_database(database.admin_url)
    assert b"Globex" in everything and bytes(wrapped_key).hex().encode() in everything

    receipt = privacy.erase("acme", ERASED, actor="dpo@acme")
    messages = relay_and_project(ledger, store, nats_url, stream_names)
    bundle_after = dump_bundle(export_bundle(ledger, checkpoints, signer, ExportRequest()))

    # 1. The plaintext is nowhere: database (ledger, read models, key store, everything), NATS, bundles.
    stored = {
        "database": every_row_in_the_database(database.admin_url),
        "nats": b"\n".join(body + orjson.dumps(headers) for _, body, headers in messages),
        "bundle exported before": bundle_before.read_bytes(),
        "bundle exported after": bundle_after,
    }
    for place, data in stored.items():
        assert b"Globex" in data, f"control: the search does not see what {place} holds"
        for subject in (ERASED, KEPT):
            for text in CONTENT[subject].values():
                for needle in needles(text):
                    assert needle not in data, f"{subject}'s plaintext found in {place}"
        assert bytes(wrapped_key).hex().encode() not in data, f"the destroyed key is still in {place}"
    assert receipt.position == size_before + 1

    # 2. Every envelope of the erased subject, from every place, raises SubjectErased; the other still opens.
    seen = where_the_content_went(ledger, store, nats_url, stream_names, bundle_before.read_bytes())
    assert set(seen) == {"ledger", "nats", "read model", "bundle"}
    for place, envelopes in seen.items():
        grouped = by_subject(envelopes)
        for envelope in grouped[ERASED]:
            with pytest.raises(SubjectErased) as erased:
                privacy.open("acme", envelope)
            assert erased.value.position == receipt.position, place
        assert {privacy.open("acme", e) for e in grouped[KEPT]} == set(CONTENT[KEPT].values()), place

    # 3. The ledger is intact: the chain and every tree head recompute, every entry is included.
    verified = verify_rows(ledger.genesis(), ledger.iter_entries(), ledger.heads())
    head = ledger.head()
    hasher = ledger.genesis().hasher
    assert head.size == size_before + 1
    root = ledger.root_at(head.size)
    for entry in ledger.iter_entries():
        verify_inclusion(hasher, entry.position - 1, head.size, entry.entry_hash,
                         ledger.inclusion_proof(entry.position, head.size), root)
    verify_consistency(hasher, size_before, head.size, ledger.consistency_proof(size_before, head.size),
                       ledger.root_at(size_before), root)
    assert (verified.size, verified.root, verified.chain_head) == (head.size, root, head.chain_head)
    assert_exactly_once_in_order(messages, ledger)  # NATS still carries exactly the hashed bytes

    # 4. The bundle exported before the erasure still verifies offline, and so does one exported after,
    #    which proves the pre-erasure checkpoint is a prefix of the ledger that records the erasure.
    old = verify_bytes(bundle_before.read_bytes())
    assert (old.entries, old.tree_size) == (size_before, size_before)
    new = verify_bytes(bundle_after)
    assert new.tree_size == head.size and size_before in new.consistent_with
    [shredding] = [e for e in load_bundle(bundle_after).entries if e.type == "SubjectKeyShredded"]
    erased_kid = by_subject(seen["ledger"])[ERASED][0]["kid"]
    assert json.loads(shredding.payload) == {"tenant_id": "acme", "subject_id": ERASED, "kid": erased_kid}
