"""Privacy service and key store over real PostgreSQL: sealing, erasure, the key cache, the content switch, CLI."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import threading

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from adapters.postgres.keystore import MASTER_KEY_ENV, PostgresKeyStore, load_master_key
from adapters.postgres.ledger_store import PostgresLedger
from api.cli import app
from application.identity import IdentityService
from application.privacy import PrivacyService, privacy_stream
from domain.identity import UnknownTenant
from domain.ledger import LedgerUnavailable
from domain.sealing import (
    ContentStorageDisabled,
    DataKey,
    DataKeyUnwrapFailed,
    EnvelopeInvalid,
    MasterKey,
    MasterKeyInvalid,
    SubjectAlreadyErased,
    SubjectErased,
    UnknownSubject,
)

MASTER = MasterKey.generate()


@pytest.fixture
def keystore(database):
    with PostgresKeyStore(database.app_url, MASTER) as opened:
        yield opened


@pytest.fixture
def privacy(keystore, ledger):
    return PrivacyService(keystore, ledger)


@pytest.fixture
def other_process(database, ledger):
    """A second PrivacyService with its own key store and cache, as another gateway process would have."""
    with PostgresKeyStore(database.app_url, MASTER) as store:
        yield PrivacyService(store, ledger)


def key_rows(database) -> list[tuple]:
    with psycopg.connect(database.admin_url) as conn:
        return conn.execute("SELECT tenant_id, subject_id, kid, master_kid, wrapped FROM keystore.data_keys").fetchall()


# --- the key store --------------------------------------------------------------------------------


def test_each_subject_has_exactly_one_key_even_when_its_first_seals_race(keystore):
    found: list[DataKey] = []
    threads = [threading.Thread(target=lambda: found.append(keystore.get_or_create("acme", "user-42")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({k.kid for k in found}) == 1 and len({k.secret for k in found}) == 1
    assert keystore.get("acme", "user-42") == found[0]
    assert keystore.get_or_create("acme", "user-7").kid != found[0].kid
    assert keystore.get_or_create("globex", "user-42").kid != found[0].kid  # subjects are per tenant
    assert keystore.get("acme", "nobody") is None


def test_keys_are_stored_wrapped_under_the_master_key_which_never_reaches_the_database(keystore, database):
    key = keystore.get_or_create("acme", "user-42")
    [(tenant, subject, kid, master_kid, wrapped)] = key_rows(database)
    assert (tenant, subject, kid, master_kid) == ("acme", "user-42", key.kid, MASTER.kid)
    assert key.secret not in bytes(wrapped) and MASTER.secret not in bytes(wrapped)


def test_the_application_role_may_read_create_and_delete_keys_but_never_change_one(keystore, database):
    keystore.get_or_create("acme", "user-42")
    with psycopg.connect(database.app_url, autocommit=True) as conn:
        for statement in ("UPDATE keystore.data_keys SET master_kid = 'x'", "TRUNCATE keystore.data_keys"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_a_process_holding_another_master_key_gets_a_clear_error_not_garbage(database, privacy):
    privacy.seal("acme", "user-42", "hello")
    with PostgresKeyStore(database.app_url, MasterKey.generate()) as wrong:
        with pytest.raises(DataKeyUnwrapFailed, match=f"wrapped under master key {MASTER.kid}"):
            wrong.get("acme", "user-42")


# --- sealing and opening ----------------------------------------------------------------------------


def test_content_sealed_by_one_process_opens_in_another(privacy, other_process):
    envelope = privacy.seal("acme", "user-42", {"prompt": "Where is my parcel?", "n": 3})
    assert privacy.is_sealed(envelope) and envelope["subject"] == "user-42"
    assert other_process.open("acme", envelope) == {"prompt": "Where is my parcel?", "n": 3}


def test_an_envelope_moved_to_another_subject_or_tenant_does_not_open(privacy):
    envelope = privacy.seal("acme", "user-42", "secret")
    privacy.seal("acme", "user-43", "theirs")
    privacy.seal("globex", "user-42", "same id, other tenant")
    with pytest.raises(EnvelopeInvalid):
        privacy.open("globex", envelope)
    with pytest.raises(EnvelopeInvalid):
        privacy.open("acme", {**envelope, "subject": "user-43"})
    with pytest.raises(EnvelopeInvalid, match="none was ever erased"):
        privacy.open("initech", envelope)
    assert privacy.open("acme", envelope) == "secret"


def test_a_changed_ciphertext_byte_is_reported_as_tampering_not_as_erasure(privacy):
    envelope = privacy.seal("acme", "user-42", "exact words")
    raw = bytearray(base64.b64decode(envelope["ct"]))
    raw[0] ^= 0x01
    with pytest.raises(EnvelopeInvalid, match="authentication failed"):
        privacy.open("acme", {**envelope, "ct": base64.b64encode(bytes(raw)).decode()})
    with pytest.raises(EnvelopeInvalid, match="expected members"):
        privacy.open("acme", {"redacted": True})


# --- erasure ----------------------------------------------------------------------------------------


def test_erasure_destroys_the_key_records_the_fact_without_content_and_holds_in_every_process_at_once(
    privacy, other_process, ledger, database
):
    mine = privacy.seal("acme", "user-42", "my address is 1 Main St")
    theirs = other_process.seal("acme", "user-42", "my phone is 555-0100")  # now cached in the other process
    bystander = privacy.seal("acme", "user-43", "not erased")

    receipt = privacy.erase("acme", "user-42", actor="dpo@acme")

    assert [r[1] for r in key_rows(database)] == ["user-43"]
    [event] = ledger.read_stream(privacy_stream("acme", "user-42"))
    assert (event.type, event.position) == ("SubjectKeyShredded", receipt.position)
    assert orjson.loads(event.payload) == {"tenant_id": "acme", "subject_id": "user-42", "kid": mine["kid"]}
    assert orjson.loads(event.metadata) == {"actor": "dpo@acme"}
    for service in (privacy, other_process):
        for envelope in (mine, theirs):
            with pytest.raises(SubjectErased) as erased:
                service.open("acme", envelope)
            assert (erased.value.subject_id, erased.value.kid, erased.value.position) == (
                "user-42", mine["kid"], receipt.position)
    assert other_process.open("acme", bystander) == "not erased"


def test_another_process_may_seal_with_its_cached_key_until_expiry_and_that_content_is_unreadable_at_once(
    privacy, other_process
):
    other_process.seal("acme", "user-42", "before")
    privacy.erase("acme", "user-42", actor="dpo")
    late = other_process.seal("acme", "user-42", "sealed by a process that had not heard yet")
    with pytest.raises(SubjectErased):
        privacy.open("acme", late)


def test_after_erasure_new_content_gets_a_new_key_which_a_later_erasure_destroys_in_turn(privacy):
    old = privacy.seal("acme", "user-42", "old")
    first = privacy.erase("acme", "user-42", actor="dpo")
    new = privacy.seal("acme", "user-42", "new")  # the erasing process evicted its cached key
    assert new["kid"] != old["kid"]
    assert privacy.open("acme", new) == "new"
    with pytest.raises(SubjectErased):
        privacy.open("acme", old)
    second = privacy.erase("acme", "user-42", actor="dpo")
    assert second.position > first.position
    with pytest.raises(SubjectErased) as erased:
        privacy.open("acme", new)
    assert erased.value.position == second.position


def test_erasing_twice_or_erasing_a_subject_never_seen_is_a_clear_error_that_changes_nothing(privacy, ledger):
    privacy.seal("acme", "user-42", "x")
    receipt = privacy.erase("acme", "user-42", actor="dpo")
    size = ledger.head().size
    with pytest.raises(SubjectAlreadyErased, match=f"position {receipt.position}"):
        privacy.erase("acme", "user-42", actor="dpo")
    with pytest.raises(UnknownSubject, match="'ghost' of tenant 'acme' has no data key"):
        privacy.erase("acme", "ghost", actor="dpo")
    assert ledger.head().size == size


def test_if_the_erasure_cannot_be_recorded_the_key_is_not_destroyed(database, keystore, privacy):
    class LedgerDown(PostgresLedger):
        def append(self, events, expected_versions=None):
            raise LedgerUnavailable("the database went away mid-commit")

    envelope = privacy.seal("acme", "user-42", "still here")
    with LedgerDown(database.app_url) as down:
        with pytest.raises(LedgerUnavailable):
            PrivacyService(keystore, down).erase("acme", "user-42", actor="dpo")
    assert privacy.open("acme", envelope) == "still here"
    receipt = privacy.erase("acme", "user-42", actor="dpo")  # the retry does it, once
    with pytest.raises(SubjectErased) as erased:
        privacy.open("acme", envelope)
    assert erased.value.position == receipt.position


def test_a_seal_that_read_the_key_while_an_erasure_ran_does_not_put_the_destroyed_key_back_in_the_cache(
    database, ledger, privacy
):
    class ErasedMidway(PostgresKeyStore):
        """Erases the subject right after handing out its key: a seal racing with an erasure."""

        def get_or_create(self, tenant_id: str, subject_id: str) -> DataKey:
            key = super().get_or_create(tenant_id, subject_id)
            if subject_id == "user-42" and not raced.is_set():
                raced.set()
                privacy_under_test.erase(tenant_id, subject_id, actor="dpo")
            return key

    raced = threading.Event()
    with ErasedMidway(database.app_url, MASTER) as store:
        privacy_under_test = PrivacyService(store, ledger)
        racing = privacy_under_test.seal("acme", "user-42", "sealed during the erasure")
        after = privacy_under_test.seal("acme", "user-42", "sealed after")
    assert after["kid"] != racing["kid"]
    with pytest.raises(SubjectErased):
        privacy.open("acme", racing)
    assert privacy.open("acme", after) == "sealed after"


def test_the_sealing_key_cache_is_bounded_and_expires(database, ledger, privacy):
    now = [0.0]
    with PostgresKeyStore(database.app_url, MASTER) as store:
        cached = PrivacyService(store, ledger, key_cache_ttl_s=10, key_cache_size=3, clock=lambda: now[0])
        for i in range(5):
            cached.seal("acme", f"user-{i}", "x")
        assert len(cached._cache) == 3
        before = cached.seal("acme", "user-4", "x")
        privacy.erase("acme", "user-4", actor="dpo")  # in another process
        assert cached.seal("acme", "user-4", "x")["kid"] == before["kid"]  # still cached there
        now[0] += 10
        assert cached.seal("acme", "user-4", "x")["kid"] != before["kid"]  # expired: the new key


def _on_the_gateways_path(service: PrivacyService, subject: str) -> str | None:
    """The kid `cached_sealer` seals under for `subject` of acme (None: it would have to read the store),
    after any background confirmation it started has finished."""
    async def seal() -> str | None:
        cached = service.cached_sealer("acme", subject)
        while service._cache.refreshing:
            await asyncio.sleep(0.005)
        return None if cached is None else cached[0]("x")["kid"]
    return asyncio.run(seal())


def test_a_busy_subjects_cached_key_is_confirmed_in_the_background_before_it_expires(database, ledger):
    IdentityService(ledger).create_tenant("acme")
    now = [0.0]
    with PostgresKeyStore(database.app_url, MASTER) as store:
        reads: list[str] = []
        real_get = store.get
        store.get = lambda tenant, subject: reads.append(subject) or real_get(tenant, subject)
        cached = PrivacyService(store, ledger, key_cache_ttl_s=10, clock=lambda: now[0])
        kid = asyncio.run(cached.sealer_async("acme", "user-7"))[0]("x")["kid"]  # the first request reads
        now[0] = 4
        assert _on_the_gateways_path(cached, "user-7") == kid and reads == []  # young: not read again
        now[0] = 6
        assert _on_the_gateways_path(cached, "user-7") == kid and reads == ["user-7"]  # aging: confirmed
        now[0] = 15  # past the first read's TTL, within the confirmation's (from 6 to 16), and aging again
        assert _on_the_gateways_path(cached, "user-7") == kid and reads == ["user-7", "user-7"]
        now[0] = 25.5  # no request since 15: expired, so the next one reads the store in the foreground
        assert _on_the_gateways_path(cached, "user-7") is None


def test_a_cached_key_erased_in_another_process_is_evicted_by_its_background_confirmation(database, ledger, privacy):
    IdentityService(ledger).create_tenant("acme")
    now = [0.0]
    with PostgresKeyStore(database.app_url, MASTER) as store:
        cached = PrivacyService(store, ledger, key_cache_ttl_s=10, clock=lambda: now[0])
        before = asyncio.run(cached.sealer_async("acme", "user-8"))[0]("x")["kid"]
        privacy.erase("acme", "user-8", actor="dpo")  # in another process
        now[0] = 6
        assert _on_the_gateways_path(cached, "user-8") == before  # this one still goes out under the old key
        assert _on_the_gateways_path(cached, "user-8") is None  # then the key is gone from the cache
        after = asyncio.run(cached.sealer_async("acme", "user-8"))[0]("x")["kid"]
    assert after != before


# --- content storage ---------------------------------------------------------------------------------


def test_content_storage_is_on_by_default_and_a_recorded_switch_turns_sealing_into_redaction(privacy, ledger):
    IdentityService(ledger).create_tenant("acme")
    stored = privacy.seal("acme", "user-42", "kept")
    assert privacy.content_storage_enabled("acme") is True

    receipt = privacy.set_content_storage("acme", False, actor="admin@acme")

    [event] = [e for e in ledger.read_stream("tenant-acme") if e.position == receipt.position]
    assert event.type == "ContentStoragePolicyChanged"
    assert orjson.loads(event.payload) == {"tenant_id": "acme", "content_storage": False}
    assert orjson.loads(event.metadata) == {"actor": "admin@acme"}
    assert privacy.content_storage_enabled("acme") is False
    assert privacy.protect("acme", "user-42", "dropped") == {"redacted": True}
    assert privacy.is_redacted(privacy.protect("acme", "user-42", "dropped"))
    with pytest.raises(ContentStorageDisabled):
        privacy.seal("acme", "user-42", "dropped")
    assert privacy.open("acme", stored) == "kept"  # what was stored before stays readable until erased
    assert privacy.protect("globex", "user-42", "other tenants are unaffected")["enc"] == "aes-256-gcm/v1"

    privacy.set_content_storage("acme", True, actor="admin@acme")
    assert privacy.is_sealed(privacy.protect("acme", "user-42", "stored again"))
    with pytest.raises(UnknownTenant):
        privacy.set_content_storage("ghost", False, actor="admin")


# --- the master key ----------------------------------------------------------------------------------


def test_the_master_key_comes_from_the_environment_or_a_private_file_created_once(tmp_path):
    secret = MasterKey.generate().secret
    assert load_master_key(tmp_path / "keys", {MASTER_KEY_ENV: secret.hex()}).secret == secret
    with pytest.raises(MasterKeyInvalid):
        load_master_key(tmp_path / "keys", {MASTER_KEY_ENV: "too short"})

    created = load_master_key(tmp_path / "keys", {})
    path = tmp_path / "keys" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(tmp_path / "keys", {}) == created
    assert os.listdir(tmp_path / "keys") == ["master.key"]


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_erases_a_subject_and_switches_content_storage(database, ledger, tmp_path):
    master = MasterKey.generate()
    env = {"NEXUS_DATABASE_URL": database.admin_url, "NEXUS_DATA_DIR": str(tmp_path), MASTER_KEY_ENV: master.secret.hex()}
    IdentityService(ledger).create_tenant("acme")
    with PostgresKeyStore(database.app_url, master) as store:
        service = PrivacyService(store, ledger)
        envelope = service.seal("acme", "user-42", "to be forgotten")
        runner = CliRunner()

        refused = runner.invoke(app, ["privacy", "erase", "user-42", "--tenant", "acme"], input="n\n", env=env)
        assert refused.exit_code == 1 and service.open("acme", envelope) == "to be forgotten"

        done = runner.invoke(app, ["privacy", "erase", "user-42", "--tenant", "acme", "--yes"], env=env)
        assert done.exit_code == 0, done.output
        assert "erased" in done.output and "SubjectKeyShredded at ledger position" in done.output
        with pytest.raises(SubjectErased):
            service.open("acme", envelope)

        again = runner.invoke(app, ["privacy", "erase", "user-42", "--tenant", "acme", "-y"], env=env)
        assert again.exit_code == 1 and "already erased" in again.output

        off = runner.invoke(app, ["privacy", "content-storage", "--tenant", "acme", "off"], env=env)
        assert off.exit_code == 0, off.output
        shown = runner.invoke(app, ["privacy", "content-storage", "--tenant", "acme"], env=env)
        assert "content storage for tenant acme: off" in shown.output
        assert service.protect("acme", "user-42", "x") == {"redacted": True}
        bad = runner.invoke(app, ["privacy", "content-storage", "--tenant", "acme", "maybe"], env=env)
        assert bad.exit_code == 2
