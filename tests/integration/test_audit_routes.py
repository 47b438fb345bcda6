"""`GET /v1/audit/bundle`: a caller downloads its own tenant's audit bundle, which verifies offline with
domain/audit.py and never holds another tenant's entry, whatever the caller asks for."""
# ruff: noqa: F811

from __future__ import annotations

from domain.audit import load_bundle, verify_bytes
from tests.integration.test_auth_support import session
from tests.integration.test_graphql_harness import api  # noqa: F401 - fixture


def _download(api, token, **params):
    with api.http(token) as client:
        return client.get("/v1/audit/bundle", params=params)


def verify_and_load(raw: bytes):  # what an auditor does: verify, then read
    verify_bytes(raw)
    return load_bundle(raw)


def test_a_tenant_downloads_a_bundle_of_its_own_entries_that_verifies_offline(api):
    session(api, "viewer", tenant="globex")  # globex writes to the same ledger meanwhile
    answer = _download(api, api.keys["acme"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-disposition"] == 'attachment; filename="acme-audit.nexus"'
    verified = verify_bytes(answer.content)
    bundle = load_bundle(answer.content)
    assert verified.entries == len(bundle.entries) > 0
    assert bundle.selection.tenant_id == "acme"
    assert {e.tenant_id for e in bundle.entries} == {"acme"}
    globex = load_bundle(_download(api, api.keys["globex"]).content)
    assert {e.tenant_id for e in globex.entries} == {"globex"}
    assert not {e.position for e in bundle.entries} & {e.position for e in globex.entries}


def test_a_stream_of_another_tenant_yields_nothing_rather_than_its_entries(api):
    user, _ = session(api, "viewer", tenant="globex")
    answer = _download(api, api.keys["acme"], stream=f"user-{user['user_id']}")
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "nothing_to_export"


def test_positions_narrow_the_bundle_and_an_empty_range_is_a_bad_request(api):
    whole = load_bundle(_download(api, api.keys["acme"]).content)
    last = whole.entries[-1].position
    answer = _download(api, api.keys["acme"], **{"from": last, "to": last})
    assert [e.position for e in verify_and_load(answer.content).entries] == [last]
    assert _download(api, api.keys["acme"], **{"from": 5, "to": 4}).status_code == 400


def test_a_signed_in_user_needs_the_ledger_read_permission(api):
    _, auditor = session(api, "auditor")
    answer = _download(api, auditor["access_token"])
    assert answer.status_code == 200, answer.text
    assert {e.tenant_id for e in verify_and_load(answer.content).entries} == {"acme"}
    with api.http() as browser:  # the console's HTTP-only access cookie works like the Bearer token
        browser.cookies.set("nexus_access", auditor["access_token"])
        assert browser.get("/v1/audit/bundle").status_code == 200
    _, viewer = session(api, "viewer")
    refused = _download(api, viewer["access_token"])
    assert refused.status_code == 403 and "ledger.read" in refused.json()["error"]["message"]
    assert _download(api, None).status_code == 401
    assert _download(api, "nx_000000000000_" + "x" * 43).status_code == 401


def test_a_selection_larger_than_the_cap_is_a_413_that_says_how_to_narrow_it(api, monkeypatch):
    """The bundle is built in memory (every entry with its inclusion proof): a huge range must be refused
    before it is read, not take the process down."""
    from api import audit_routes

    session(api, "viewer")  # a few more entries of acme
    whole = load_bundle(_download(api, api.keys["acme"]).content)
    assert len(whole.entries) > 2
    monkeypatch.setattr(audit_routes, "MAX_BUNDLE_ENTRIES", 2, raising=False)
    answer = _download(api, api.keys["acme"])
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["code"] == "bundle_too_large" and "from" in error["message"] and "to" in error["message"]
    second = whole.entries[1].position
    assert f"to={second}" in error["message"]  # where the first bundle of at most 2 entries ends
    narrowed = _download(api, api.keys["acme"], **{"to": second})
    assert [e.position for e in verify_and_load(narrowed.content).entries] == [e.position for e in whole.entries[:2]]
