"""Tenants and API keys: issued once, stored hashed, revoked at once, scoped to their tenant."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from api.deps import require_scope
from api.errors import install_error_handlers
from application.identity import IdentityService
from domain.identity import (
    ApiKeyAlreadyRevoked,
    InvalidScopes,
    InvalidTenantId,
    TenantAlreadyExists,
    UnknownApiKey,
    UnknownTenant,
)


@pytest.fixture
def identity(ledger):
    return IdentityService(ledger)


def test_a_key_authenticates_as_its_tenant_with_its_scopes(identity):
    identity.create_tenant("acme")
    key, receipt = identity.issue_key("acme", "inference,read", "ci")
    principal = identity.authenticate(key.token)
    assert (principal.tenant_id, principal.key_id, principal.scopes) == ("acme", key.key_id, {"inference", "read"})
    assert receipt.position == 2


def test_only_the_hash_of_the_secret_is_recorded(identity, ledger):
    identity.create_tenant("acme")
    key, _ = identity.issue_key("acme", ["inference"])
    everything = b"".join(e.payload + e.metadata for e in ledger.read(1))
    assert key.secret.encode() not in everything
    assert key.secret_hash.encode() in everything
    assert all("secret" not in k for listed in identity.list_keys("acme") for k in listed)


def test_a_revoked_key_stops_working_at_once(identity):
    identity.create_tenant("acme")
    key, _ = identity.issue_key("acme", ["inference"])
    assert identity.authenticate(key.token) is not None
    identity.revoke_key("acme", key.key_id)
    assert identity.authenticate(key.token) is None
    with pytest.raises(ApiKeyAlreadyRevoked):
        identity.revoke_key("acme", key.key_id)


def test_a_key_is_remembered_once_read_and_forgotten_when_revoked_or_refused(identity, ledger):
    identity.create_tenant("acme")
    key, _ = identity.issue_key("acme", "inference", "ci")
    assert identity.recently_authenticated(key.token) is None  # never read in this process
    principal = identity.authenticate(key.token)
    assert identity.recently_authenticated(key.token) == (principal, 1)  # read at version 1: ApiKeyIssued
    assert identity.recently_authenticated(key.token + "x") is None
    identity.revoke_key("acme", key.key_id)
    assert identity.recently_authenticated(key.token) is None
    other_process = IdentityService(ledger)  # its revocation is not seen here until a read
    again, _ = identity.issue_key("acme", "inference", "ci")
    identity.authenticate(again.token)
    other_process.revoke_key("acme", again.key_id)
    assert identity.recently_authenticated(again.token) is not None
    assert identity.authenticate(again.token) is None
    assert identity.recently_authenticated(again.token) is None


def test_confirming_a_key_reads_it_again_and_gives_its_streams_version_only_while_it_stands(identity, ledger):
    identity.create_tenant("acme")
    key, _ = identity.issue_key("acme", "inference", "ci")

    async def confirm(tenant: str, scope: str) -> int | None:
        return await identity.confirm_async(key.token, tenant, scope)

    assert asyncio.run(confirm("acme", "inference")) == 1
    assert asyncio.run(confirm("acme", "admin")) is None  # a scope it lacks
    assert asyncio.run(confirm("globex", "inference")) is None  # another tenant
    IdentityService(ledger).revoke_key("acme", key.key_id)  # in another process
    assert asyncio.run(confirm("acme", "inference")) is None
    assert identity.recently_authenticated(key.token) is None


def test_a_remembered_key_expires(ledger):
    now = [0.0]
    identity = IdentityService(ledger, verified_key_ttl_s=60, clock=lambda: now[0])
    identity.create_tenant("acme")
    key, _ = identity.issue_key("acme", "inference", "ci")
    identity.authenticate(key.token)
    now[0] = 59.9
    assert identity.recently_authenticated(key.token) is not None
    now[0] = 60.0
    assert identity.recently_authenticated(key.token) is None


def test_a_tenant_cannot_revoke_another_tenants_key(identity):
    identity.create_tenant("acme")
    identity.create_tenant("globex")
    key, _ = identity.issue_key("acme", ["admin"])
    with pytest.raises(UnknownApiKey):
        identity.revoke_key("globex", key.key_id)
    assert identity.authenticate(key.token) is not None
    assert identity.list_keys("globex") == []


@pytest.mark.parametrize("token", ["", "nx_", "sk-whatever", "nx_0123456789ab_short", "nx_zzzzzzzzzzzz_" + "a" * 43])
def test_malformed_or_unknown_keys_authenticate_as_nobody(identity, token):
    assert identity.authenticate(token) is None


def test_a_wrong_secret_for_a_real_key_id_is_refused(identity):
    identity.create_tenant("acme")
    key, _ = identity.issue_key("acme", ["inference"])
    forged = f"nx_{key.key_id}_{'A' * 43}"
    assert identity.authenticate(forged) is None


def test_bad_commands_are_refused_and_write_nothing(identity, ledger):
    with pytest.raises(InvalidTenantId):
        identity.create_tenant("Not A Slug")
    with pytest.raises(UnknownTenant):
        identity.issue_key("ghost", ["inference"])
    identity.create_tenant("acme")
    with pytest.raises(TenantAlreadyExists):
        identity.create_tenant("acme")
    with pytest.raises(InvalidScopes):
        identity.issue_key("acme", ["inference", "root"])
    with pytest.raises(InvalidScopes):
        identity.issue_key("acme", [])
    assert ledger.head().size == 1


def test_http_requests_get_401_without_a_valid_key_and_403_without_the_scope(identity, ledger):
    class Container:
        pass

    container = Container()
    container.identity = identity
    app = FastAPI()
    app.state.container = container
    install_error_handlers(app)

    @app.get("/needs-inference")
    def needs_inference(principal=Depends(require_scope("inference"))):  # noqa: B008
        return {"tenant": principal.tenant_id}

    identity.create_tenant("acme")
    reader, _ = identity.issue_key("acme", ["read"])
    caller, _ = identity.issue_key("acme", ["inference"])
    client = TestClient(app)
    missing = client.get("/needs-inference")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert client.get("/needs-inference", headers={"Authorization": "Bearer nx_nope"}).status_code == 401
    denied = client.get("/needs-inference", headers={"Authorization": f"Bearer {reader.token}"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"
    ok = client.get("/needs-inference", headers={"Authorization": f"Bearer {caller.token}"})
    assert ok.json() == {"tenant": "acme"}
    identity.revoke_key("acme", caller.key_id)
    assert client.get("/needs-inference", headers={"Authorization": f"Bearer {caller.token}"}).status_code == 401
