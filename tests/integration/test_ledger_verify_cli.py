"""`nexus ledger verify`, run as a user runs it: a process, its exit code and the one line it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.keystore import FileKeyStore
from adapters.postgres.checkpoint_store import PostgresCheckpointStore
from adapters.postgres.ledger_store import PostgresLedger
from application.signer import CheckpointSigner
from domain.checkpoint import Checkpoint
from domain.ledger import NewEvent

ROOT = Path(__file__).resolve().parents[2]


def nexus_verify(url: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "ledger", "verify", "--database-url", url, "--no-progress", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fill(ledger: PostgresLedger, commits: int, per_commit: int) -> None:
    for c in range(commits):
        ledger.append(
            [NewEvent(f"chat-{(c + i) % 5}", "InferenceCompleted", {"c": c, "i": i, "text": "x" * 50}, tenant_id="acme")
             for i in range(per_commit)]
        )


def tamper(admin_url: str, statement: str, params: tuple = ()) -> None:
    """Change a committed row as a superuser would, with the append-only triggers off."""
    with psycopg.connect(admin_url) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(statement, params)  # type: ignore[arg-type]


@pytest.fixture
def signed(database, ledger, tmp_path) -> Checkpoint:
    """A ledger of 101 entries (the key rotation is one) with a signed checkpoint at 61 and at 101."""
    signer = CheckpointSigner(ledger, FileKeyStore(tmp_path / "keys"), PostgresCheckpointStore(database.app_url))
    fill(ledger, 6, 10)
    signer.sign_now()
    fill(ledger, 4, 10)
    return signer.sign_now()


def test_a_sound_ledger_verifies_ok_with_its_size_and_root(database, ledger, signed):
    run = nexus_verify(database.app_url)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"OK: size {signed.tree_size} root {ledger.head().root.hex()} ")
    assert "2 signed checkpoints" in run.stdout


@pytest.mark.parametrize("workers, segment_size", [("1", "16384"), ("2", "16")])
def test_a_changed_row_fails_with_its_position_on_one_line_and_exit_code_1(database, ledger, signed, workers, segment_size):
    tamper(database.admin_url, "UPDATE ledger.events SET payload = '{\"c\":0,\"i\":99}' WHERE position = 97")
    run = nexus_verify(database.app_url, "--workers", workers, "--segment-size", segment_size)
    assert run.returncode == 1
    assert run.stdout.startswith("FAILED: position 97: content changed: stored entry hash ")
    assert run.stdout.count("\n") == 1
    assert "Traceback" not in run.stderr


def test_a_changed_merkle_node_is_named_as_such(database, ledger, signed):
    tamper(database.admin_url, "UPDATE ledger.merkle_nodes SET hash = sha256(hash) WHERE level = 5 AND idx = 1")
    run = nexus_verify(database.app_url)
    assert run.returncode == 1
    assert run.stdout.startswith("FAILED: position 64: stored merkle node differs from the recomputed tree: node (level 5, index 1)")


def test_a_trusted_key_must_have_signed_a_checkpoint(database, ledger, signed, tmp_path):
    published = PostgresCheckpointStore(database.app_url).public_keys()[signed.key_id]
    assert nexus_verify(database.app_url, "--trusted-key", published.hex()).returncode == 0

    pem = tmp_path / "trusted.pem"
    pem.write_bytes(
        Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    run = nexus_verify(database.app_url, "--trusted-key", str(pem))
    assert run.returncode == 1
    assert run.stdout.startswith("FAILED: ledger: no checkpoint is signed by a trusted key")


def test_a_forged_checkpoint_signature_fails_at_its_size(database, ledger, signed):
    tamper(
        database.admin_url,
        "UPDATE ledger.checkpoints SET root = sha256(root) WHERE tree_size = %s",
        (signed.tree_size,),
    )
    run = nexus_verify(database.app_url)
    assert run.returncode == 1
    assert run.stdout.startswith(f"FAILED: position {signed.tree_size}: checkpoint signature does not verify")


def test_from_a_checkpoint_only_the_entries_after_it_are_walked(database, ledger, signed):
    run = nexus_verify(database.app_url, "--from-checkpoint")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"(0 entries from the checkpoint at size {signed.tree_size}," in run.stdout

    fill(ledger, 1, 7)
    run = nexus_verify(database.app_url, "--from-checkpoint")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"(7 entries from the checkpoint at size {signed.tree_size}," in run.stdout

    tamper(database.admin_url, "UPDATE ledger.events SET type = 'Forged' WHERE position = %s", (signed.tree_size + 3,))
    run = nexus_verify(database.app_url, "--from-checkpoint")
    assert run.stdout.startswith(f"FAILED: position {signed.tree_size + 3}: content changed")


def test_from_a_checkpoint_the_stored_tree_under_it_must_hash_to_its_signed_root(database, ledger, signed):
    tamper(database.admin_url, "UPDATE ledger.merkle_nodes SET hash = sha256(hash) WHERE level = 6 AND idx = 0")
    run = nexus_verify(database.app_url, "--from-checkpoint")
    assert run.returncode == 1
    assert run.stdout.startswith(f"FAILED: position {signed.tree_size}: signed checkpoint differs from the recomputed tree")


def test_an_unreachable_database_is_an_error_on_one_line_with_exit_code_2():
    run = nexus_verify("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    assert run.returncode == 2
    assert run.stderr.startswith("ERROR: ")
    assert run.stderr.count("\n") == 1
    assert "Traceback" not in run.stderr
