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
    return sorted(route.deployment.name for route in table.get("gpt-test", []))


def test_a_busy_tenants_table_is_due_for_a_background_read_once_past_half_its_ttl(ledger, tmp_path):
    IdentityService(ledger).create_tenant("acme")
    now = [100.0]
    cached, elsewhere = services(ledger, tmp_path, now)
    deploy(elsewhere, "first")
    assert names(cached.routes("acme")) == ["first"]
    deploy(elsewhere, "second")  # another process: this one's copy stays until it is read again
    now[0] += 0.4
    assert not cached.due_for_refresh("acme")
    assert names(cached.cached_routes("acme")) == ["first"]
    now[0] += 0.2  # past half the TTL: due once, however many requests ask
    assert cached.due_for_refresh("acme")
    assert not cached.due_for_refresh("acme")
    assert names(cached.cached_routes("acme")) == ["first"]  # requests go on with the copy meanwhile
    cached.refresh("acme")  # in the gateway: run in a worker thread
    now[0] += 0.9  # 1.5 s after the first read, 0.9 s after the second: still fresh
    assert names(cached.cached_routes("acme")) == ["first", "second"]
    now[0] += 0.2
    assert cached.cached_routes("acme") is None  # expired: the next request reads it on its path


def test_a_background_read_begun_before_a_change_here_does_not_bring_the_old_table_back(ledger, tmp_path):
    IdentityService(ledger).create_tenant("acme")
    now = [100.0]
    cached, _ = services(ledger, tmp_path, now)
    deploy(cached, "first")
    cached.routes("acme")
    now[0] += 0.6
    assert cached.due_for_refresh("acme")
    read = cached._load

    def a_change_lands_during_the_read(tenant_id: str):
        found = read(tenant_id)
        cached._load = read  # type: ignore[method-assign]
        deploy(cached, "second")  # configured through this process: the cached copy is dropped
        return found

    cached._load = a_change_lands_during_the_read  # type: ignore[method-assign]
    cached.refresh("acme")
    assert cached.cached_routes("acme") is None
    assert names(cached.routes("acme")) == ["first", "second"]
