"""Signed checkpoints: signed with the current key, verifiable by anyone, rotation recorded in the ledger."""

from __future__ import annotations

import stat

import pytest

from adapters.keystore import FileKeyStore
from adapters.postgres.checkpoint_store import PostgresCheckpointStore
from application.signer import SIGNING_KEYS_STREAM, CheckpointSigner
from domain.checkpoint import Checkpoint, CheckpointSignatureInvalid
from domain.ledger import NewEvent


@pytest.fixture
def signer(ledger, database, tmp_path):
    return CheckpointSigner(ledger, FileKeyStore(tmp_path / "keys"), PostgresCheckpointStore(database.app_url))


def test_a_checkpoint_signs_the_current_head_and_verifies_with_the_published_key(ledger, database, signer):
    ledger.append([NewEvent("s", "Thing", {"n": n}) for n in range(5)])
    checkpoint = signer.sign_now()
    head = ledger.head()
    assert (checkpoint.tree_size, checkpoint.root, checkpoint.chain_head) == (head.size, head.root, head.chain_head)
    assert checkpoint.ledger_id == ledger.genesis().ledger_id
    keys = PostgresCheckpointStore(database.app_url).public_keys()
    checkpoint.verify(keys[checkpoint.key_id])
    assert PostgresCheckpointStore(database.app_url).latest() == checkpoint


def test_a_changed_checkpoint_or_a_foreign_key_does_not_verify(ledger, database, signer):
    ledger.append([NewEvent("s", "Thing", {})])
    checkpoint = signer.sign_now()
    public = PostgresCheckpointStore(database.app_url).public_keys()[checkpoint.key_id]
    forged = Checkpoint(**{**checkpoint.__dict__, "tree_size": checkpoint.tree_size + 1})
    with pytest.raises(CheckpointSignatureInvalid):
        forged.verify(public)
    other = FileKeyStore(signer._keys.directory.parent / "other").generate()
    with pytest.raises(CheckpointSignatureInvalid):
        checkpoint.verify(other.public_key)


def test_rotation_is_an_event_and_later_checkpoints_use_the_new_key(ledger, signer):
    first = signer.sign_now()
    rotated = signer.rotate()
    second = signer.sign_now()
    assert second.key_id == rotated.key_id != first.key_id
    events = ledger.read_stream(SIGNING_KEYS_STREAM)
    assert [e.type for e in events] == ["SigningKeyRotated", "SigningKeyRotated"]
    assert rotated.public_key.hex().encode() in events[-1].payload
    assert first.key_id.encode() in events[-1].payload  # previous_key_id


def test_private_keys_are_owner_only_files_and_never_printed(signer):
    key = signer.key()
    pem = signer._keys.directory / f"{key.key_id}.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert "PRIVATE" not in repr(key) and key.key_id in repr(key)


def test_the_background_signer_signs_only_when_the_ledger_grew(ledger, signer):
    assert signer.sign_if_grown() is not None
    assert signer.sign_if_grown() is None
    ledger.append([NewEvent("s", "Thing", {})])
    assert signer.sign_if_grown() is not None
