"""The gateway's routing table cache: fresh within its TTL, read again in the background before it expires.

"Another process" is a second DeploymentService on the same ledger, as a second API process would be.
"""

from __future__ import annotations

from adapters.postgres.keystore import load_master_key
from adapters.postgres.ledger_store import PostgresLedger
from adapters.secrets import AesGcmCredentialSealer
from application.deployments import DeploymentService
from application.identity import IdentityService
from domain.pricing import Price

PRICE = Price(input=1_000_000, output=2_000_000, currency="USD", version="test-1")


def services(ledger: PostgresLedger, tmp_path, now: list[float]) -> tuple[DeploymentService, DeploymentService]:
    sealer = AesGcmCredentialSealer(load_master_key(tmp_path, environ={}))
    cached = DeploymentService(ledger, sealer, cache_ttl_s=1.0, clock=lambda: now[0])
    return cached, DeploymentService(ledger, sealer)


def deploy(service: DeploymentService, name: str) -> None:
    service.configure("acme", name=name, provider="openai", model="m", model_name="gpt-test", price=PRICE)


def names(table) -> list[str]:
    return sorted(route.deployment.name for route in table.models.get("gpt-test", []))


def counting_reads(service: DeploymentService) -> list[str]:
    reads: list[str] = []
    load = service._load

    def counted(tenant_id: str):
        reads.append(tenant_id)
        return load(tenant_id)

    service._load = counted  # type: ignore[method-assign]
    return reads


def test_a_busy_tenants_table_is_read_again_once_past_half_its_ttl_while_requests_use_the_copy(ledger, tmp_path):
    """Outside an event loop the background read runs at once; on the gateway's loop, in a worker thread."""
    IdentityService(ledger).create_tenant("acme")
    now = [100.0]
    cached, elsewhere = services(ledger, tmp_path, now)
    reads = counting_reads(cached)
    deploy(elsewhere, "first")
    assert names(cached.routes("acme")) == ["first"] and len(reads) == 1
    deploy(elsewhere, "second")  # another process: this one's copy stays until it is read again
    now[0] += 0.4
    assert names(cached.cached_routes("acme")) == ["first"] and len(reads) == 1  # young: not read again
    now[0] += 0.2  # past half the TTL: read again, and this request goes on with the copy
    assert names(cached.cached_routes("acme")) == ["first"] and len(reads) == 2
    assert names(cached.cached_routes("acme")) == ["first", "second"] and len(reads) == 2
    now[0] += 0.95  # 1.55 s after the first read, 0.95 s after the second: still served (and read again)
    assert names(cached.cached_routes("acme")) == ["first", "second"]
    now[0] += 1.05  # no request for longer than the TTL: expired, the next request reads it on its path
    assert cached.cached_routes("acme") is None


def test_a_background_read_begun_before_a_change_here_does_not_bring_the_old_table_back(ledger, tmp_path):
    IdentityService(ledger).create_tenant("acme")
    now = [100.0]
    cached, _ = services(ledger, tmp_path, now)
    deploy(cached, "first")
    cached.routes("acme")
    now[0] += 0.6
    read = cached._load

    def a_change_lands_during_the_read(tenant_id: str):
        found = read(tenant_id)
        cached._load = read  # type: ignore[method-assign]
        deploy(cached, "second")  # configured through this process: the cached copy is dropped
        return found

    cached._load = a_change_lands_during_the_read  # type: ignore[method-assign]
    assert names(cached.cached_routes("acme")) == ["first"]  # the copy, while the read (and the change) run
    assert cached.cached_routes("acme") is None
    assert names(cached.routes("acme")) == ["first", "second"]


def test_a_recording_mode_set_in_another_process_arrives_with_the_next_read_of_the_table(ledger, tmp_path):
    IdentityService(ledger).create_tenant("acme")
    now = [100.0]
    cached, elsewhere = services(ledger, tmp_path, now)
    deploy(elsewhere, "first")
    assert not cached.routes("acme").strict_recording
    elsewhere.set_recording("acme", "strict")
    assert not cached.cached_routes("acme").strict_recording  # this process's copy, within its TTL
    now[0] += 0.6  # past half the TTL: read again (outside an event loop, at once)
    cached.cached_routes("acme")
    assert cached.cached_routes("acme").strict_recording
    cached.set_recording("acme", "deferred")  # through this process: at once
    assert cached.cached_routes("acme") is None and not cached.routes("acme").strict_recording
