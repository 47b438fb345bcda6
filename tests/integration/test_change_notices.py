"""Change notices: what one process changes, every other API process stops using at once.

"Here" is a process's services with a clock that never moves, so nothing it caches ever expires on its
own: only a notice can make it read again. "Elsewhere" is another process (the CLI, another API
process): services of their own on their own connections. The follower listens on a real PostgreSQL
connection, in an event loop of its own, as it does in each API process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from adapters.postgres.change_notices import CHANNEL, PostgresChangeNotices
from adapters.postgres.keystore import MasterKey, PostgresKeyStore
from adapters.postgres.ledger_store import PostgresLedger
from adapters.secrets import AesGcmCredentialSealer
from application.change_notices import CacheInvalidation
from application.deployments import DeploymentService
from application.identity import IdentityService
from application.ports import ChangeNotice
from application.privacy import PrivacyService
from domain import deployments as dep
from domain.ledger import NewEvent
from domain.pricing import Price
from domain.sealing import SubjectErased
from tests.polling import eventually

MASTER = MasterKey.generate()
PRICE = Price(input=1_000_000, output=2_000_000, currency="USD", version="test-1")
FROZEN = 100.0  # "here"'s clock: its copies never expire


@dataclass
class Process:
    ledger: PostgresLedger
    identity: IdentityService
    privacy: PrivacyService
    deployments: DeploymentService

    def close(self) -> None:
        self.privacy.close()
        self.ledger.close()


def process(database, clock: Callable[[], float] | None = None) -> Process:
    ledger = PostgresLedger(database.app_url)
    options = {"clock": clock} if clock else {}
    sealer = AesGcmCredentialSealer(MASTER)
    return Process(ledger, IdentityService(ledger, **options),
                   PrivacyService(PostgresKeyStore(database.app_url, MASTER), ledger, **options),
                   DeploymentService(ledger, sealer, **options))


@contextmanager
def following(url: str, invalidation: CacheInvalidation, *, listens: bool = True,
              **options: Any) -> Iterator[PostgresChangeNotices]:
    """The follower on an event loop in a thread, as in an API process; returns once it listens (if it can)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    notices = PostgresChangeNotices(url, **options)
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(notices.follow(invalidation, stop),), daemon=True)
    thread.start()
    try:
        if listens:
            eventually(lambda: invalidation.listening, "the follower began listening")
        yield notices
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def here(database) -> Iterator[Process]:
    opened = process(database, clock=lambda: FROZEN)
    yield opened
    opened.close()


@pytest.fixture
def elsewhere(database) -> Iterator[Process]:
    opened = process(database)
    opened.identity.create_tenant("acme")
    yield opened
    opened.close()


@pytest.fixture
def invalidation(here: Process) -> CacheInvalidation:
    return CacheInvalidation(here.identity, here.privacy, here.deployments)


def test_a_key_revoked_elsewhere_is_forgotten_here_although_its_copy_never_expires(database, here, elsewhere,
                                                                                    invalidation):
    key, _ = elsewhere.identity.issue_key("acme", ["inference"], "ci")
    other, _ = elsewhere.identity.issue_key("acme", ["inference"], "other")
    with following(database.app_url, invalidation):
        assert here.identity.authenticate(key.token) is not None
        assert here.identity.authenticate(other.token) is not None
        elsewhere.identity.revoke_key("acme", key.key_id, reason="leaked")
        took = eventually(lambda: here.identity.recently_authenticated(key.token) is None, "the revoked key forgotten")
        assert took < 1.0
        assert here.identity.authenticate(key.token) is None  # read again: refused
        assert here.identity.recently_authenticated(other.token) is not None  # another key of the tenant stays


def test_a_subject_erased_elsewhere_is_never_sealed_for_here_with_its_destroyed_key(database, here, elsewhere,
                                                                                     invalidation):
    with following(database.app_url, invalidation):
        before = here.privacy.protect("acme", "user-42", "my address is 1 Main St")
        asyncio.run(here.privacy.sealer_async("acme", "user-42"))  # the switch cached too: until the key is
        assert here.privacy.cached_sealer("acme", "user-42") is not None  # forgotten, a sealer is at hand
        elsewhere.privacy.erase("acme", "user-42", actor="dpo")
        eventually(lambda: here.privacy.cached_sealer("acme", "user-42") is None, "the destroyed key forgotten")
        after = here.privacy.protect("acme", "user-42", "sealed after the erasure")
    assert after["kid"] != before["kid"]  # a new key, which a later erasure destroys in turn
    with pytest.raises(SubjectErased):
        here.privacy.open("acme", before)
    assert elsewhere.privacy.open("acme", after) == "sealed after the erasure"


def test_a_recording_mode_and_deployments_set_elsewhere_hold_here_at_once(database, here, elsewhere, invalidation):
    elsewhere.deployments.configure("acme", name="first", provider="openai", model="m", model_name="gpt-test",
                                    price=PRICE)
    with following(database.app_url, invalidation):
        assert here.deployments.routes("acme").recording == dep.DEFERRED
        elsewhere.deployments.set_recording("acme", dep.STRICT)
        eventually(lambda: here.deployments.cached_routes("acme") is None, "the routing table forgotten")
        assert here.deployments.routes("acme").strict_recording
        elsewhere.deployments.configure("acme", name="second", provider="openai", model="m", model_name="gpt-test",
                                        price=PRICE)
        eventually(lambda: here.deployments.cached_routes("acme") is None, "the routing table forgotten again")
        assert sorted(r.deployment.name for r in here.deployments.routes("acme").get("gpt-test")) == ["first", "second"]


def test_content_storage_turned_off_elsewhere_is_read_again_here(database, here, elsewhere, invalidation):
    async def sealed() -> dict:
        seal, _, _ = await here.privacy.sealer_async("acme", "user-7")
        return seal("a prompt")

    with following(database.app_url, invalidation):
        assert here.privacy.is_sealed(asyncio.run(sealed()))
        elsewhere.privacy.set_content_storage("acme", False, actor="admin")
        eventually(lambda: here.privacy.cached_sealer("acme", "user-7") is None, "the switch forgotten")
        assert here.privacy.is_redacted(asyncio.run(sealed()))


def test_only_what_processes_cache_is_announced_and_in_commit_order(database, elsewhere):
    """An inference's records cost a comparison in the trigger's WHEN clause, not a notice."""
    seen: list[ChangeNotice] = []

    class Recording(CacheInvalidation):
        def changed(self, notice: ChangeNotice) -> None:
            seen.append(notice)

        def forget_everything(self) -> None:
            self.gaps += 1

    recorder = Recording(elsewhere.identity, elsewhere.privacy, elsewhere.deployments)
    with following(database.app_url, recorder):
        elsewhere.ledger.append([NewEvent("inference-r1", "InferenceCompleted", {"n": 1}, tenant_id="acme")])
        elsewhere.ledger.append([NewEvent("tenant-acme", "TenantRenamed", {"name": "Acme"}, tenant_id="acme")])
        key, _ = elsewhere.identity.issue_key("acme", ["read"], "audit")
        elsewhere.deployments.set_recording("acme", dep.STRICT)
        eventually(lambda: len(seen) == 3, "three notices")
    assert seen == [ChangeNotice("acme", stream_id="tenant-acme"),
                    ChangeNotice("acme", stream_id=f"apikey-{key.key_id}"),
                    ChangeNotice("acme", stream_id="deployments-acme")]


def test_a_lost_connection_makes_a_process_forget_everything_and_listen_again(database, here, elsewhere,
                                                                               invalidation):
    """Notices committed while nobody listened are lost: a process that lost its connection cannot know
    what it missed, so it reads everything again once it listens again."""
    key, _ = elsewhere.identity.issue_key("acme", ["inference"], "ci")
    with following(database.app_url, invalidation, reconnect_after_s=0.05):
        assert here.identity.authenticate(key.token) is not None
        with psycopg.connect(database.admin_url, autocommit=True) as admin:
            [ended] = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                    " WHERE datname = current_database() AND query = %s", (f"LISTEN {CHANNEL}",)
                                    ).fetchone()
        assert ended
        # interrupted (everything forgotten), then resumed once reconnected (forgotten again)
        eventually(lambda: invalidation.gaps == 3 and invalidation.listening, "listening again")
        assert here.identity.recently_authenticated(key.token) is None  # forgotten with everything else
        assert here.identity.authenticate(key.token) is not None
        elsewhere.identity.revoke_key("acme", key.key_id)  # and notices arrive again
        eventually(lambda: here.identity.recently_authenticated(key.token) is None, "the revoked key forgotten")


def test_a_notice_nobody_can_read_makes_a_process_forget_everything(database, here, elsewhere, invalidation):
    key, _ = elsewhere.identity.issue_key("acme", ["inference"], "ci")
    with following(database.app_url, invalidation):
        assert here.identity.authenticate(key.token) is not None
        with psycopg.connect(database.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_notify(%s, 'not json')", (CHANNEL,))
        eventually(lambda: invalidation.gaps == 2, "everything forgotten")
    assert here.identity.recently_authenticated(key.token) is None


def test_while_notices_flow_a_busy_subjects_key_is_never_read_again_and_without_them_it_expires(database, elsewhere):
    """A copy lasts until a notice drops it, so nothing is read again in the background; once the notices stop
    (the connection lost), everything cached is dropped and copies expire after their TTL again."""
    now = [FROZEN]
    here = process(database, clock=lambda: now[0])
    reads: list[str] = []
    read_key = here.privacy._keys.get

    def counted(tenant_id: str, subject_id: str):
        reads.append(subject_id)
        return read_key(tenant_id, subject_id)

    here.privacy._keys.get = counted  # type: ignore[method-assign]
    invalidation = CacheInvalidation(here.identity, here.privacy, here.deployments)
    try:
        with following(database.app_url, invalidation, reconnect_after_s=60):
            asyncio.run(here.privacy.sealer_async("acme", "user-42"))  # as the gateway does: the key and the switch
            reads.clear()
            for _ in range(60):  # five minutes of requests, thirty times the key's TTL: never read again
                now[0] += 5
                assert here.privacy.cached_sealer("acme", "user-42") is not None
            assert reads == []  # (outside an event loop a background read would have run at once)
            with psycopg.connect(database.admin_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = current_database() AND query = %s", (f"LISTEN {CHANNEL}",))
            eventually(lambda: not invalidation.listening, "the lost connection noticed")
            assert here.privacy.cached_sealer("acme", "user-42") is None  # dropped with everything else
            asyncio.run(here.privacy.sealer_async("acme", "user-42"))  # read and cached again, for its TTL only
            reads.clear()
            now[0] += 6  # past half the 10 s TTL: read again in the background, as without notices
            assert here.privacy.cached_sealer("acme", "user-42") is not None
            eventually(lambda: reads == ["user-42"], "the background read")
    finally:
        here.close()


def test_a_process_whose_notices_never_arrive_keeps_its_ttls_and_says_why(database, here, elsewhere, invalidation,
                                                                          caplog):
    """As behind a pooler in transaction mode: LISTEN succeeds, and nothing is ever heard. Trusting it would keep
    every copy for ever, a revoked key included; the follower's probe never comes back, so it never does."""
    with following(database.app_url, invalidation, listens=False, probe_url=database.elsewhere_url,
                   probe_timeout_s=0.3, undelivered_retry_s=0.2) as notices:
        eventually(lambda: "change notices do not reach this process" in caplog.text, "the reason logged")
        assert not invalidation.listening
        notices.probes.url = database.app_url  # the pooler gone: delivery proven, notices trusted again
        eventually(lambda: invalidation.listening, "listening once probes come back")
    assert "is a pooler in transaction mode between it and PostgreSQL?" in caplog.text


def test_notices_that_stop_arriving_while_a_process_listens_are_noticed_by_its_next_probe(
        database, here, elsewhere, invalidation, caplog):
    key, _ = elsewhere.identity.issue_key("acme", ["inference"], "ci")
    with following(database.app_url, invalidation, probe_every_s=0.2, probe_timeout_s=0.5,
                   undelivered_retry_s=0.2) as notices:
        assert here.identity.authenticate(key.token) is not None
        gaps = invalidation.gaps
        notices.probes.url = database.elsewhere_url  # from now on, nothing the follower sends comes back
        eventually(lambda: not invalidation.listening, "delivery no longer trusted")
        assert invalidation.gaps > gaps and here.identity.recently_authenticated(key.token) is None
        notices.probes.url = database.app_url
        eventually(lambda: invalidation.listening, "trusted again")
        elsewhere.identity.revoke_key("acme", key.key_id)
        eventually(lambda: here.identity.authenticate(key.token) is None, "the revocation heard")
