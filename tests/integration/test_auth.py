"""Password sign-in and sessions: a signed-in user acts with exactly its role's permissions, in its own
tenant only; refresh tokens rotate and betray reuse; sign-out, role changes and deactivation hold on
the next request; failures never say which part was wrong."""
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt

import httpx

from tests.integration.test_auth_support import errors, session, sign_in, user_with_password
from tests.integration.test_graphql_harness import api  # noqa: F401 - fixture

USERS = "{ users { userId } }"
API_KEYS = "{ apiKeys { keyId } }"
ME = "{ me { tenantId subject permissions } }"


def _refresh(api, token):
    with api.http() as client:
        return client.post("/v1/auth/refresh", json={"refresh_token": token})


def test_invite_set_password_sign_in_then_act_with_the_roles_permissions(api):
    user, signed = session(api, "developer")
    me = api.data(ME, token=signed["access_token"])["me"]
    assert (me["tenantId"], me["subject"]) == ("acme", f"user:{user['user_id']}")
    assert errors(api, API_KEYS, signed["access_token"]) == []  # developers read API keys
    assert errors(api, USERS, signed["access_token"]) == ["FORBIDDEN"]  # but not users
    assert signed["token_type"] == "Bearer" and 0 < signed["expires_in"] <= 600


def test_wrong_password_unknown_user_and_wrong_tenant_get_the_same_answer(api):
    user = user_with_password(api, "viewer")
    answers = [sign_in(api, user, password="not the password"),
               sign_in(api, {"email": "nobody@example.com"}),
               sign_in(api, user, tenant="globex")]
    assert {a.status_code for a in answers} == {401}
    assert len({a.text for a in answers}) == 1


def test_sign_in_attempts_are_rate_limited_per_email_and_address(api):
    user = user_with_password(api, "viewer")
    codes = [sign_in(api, user, password="guess number one").status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    assert sign_in(api, {"email": "someone.else@example.com"}).status_code == 401  # another email: its own bucket


def test_the_session_is_set_as_http_only_strict_cookies_and_graphql_accepts_the_access_cookie(api):
    user = user_with_password(api, "viewer")
    answer = sign_in(api, user)
    cookies = answer.headers.get_list("set-cookie")
    assert any(c.startswith("nexus_access=") and "HttpOnly" in c and "SameSite=strict" in c and "Path=/;" in c
               for c in cookies)
    assert any(c.startswith("nexus_refresh=") and "HttpOnly" in c and "Path=/v1/auth" in c for c in cookies)
    with httpx.Client(base_url=api.url, cookies={"nexus_access": answer.json()["access_token"]}) as client:
        body = client.post("/graphql", json={"query": ME})
    assert body.json()["data"]["me"]["tenantId"] == "acme"


def test_a_refresh_token_rotates_and_its_reuse_revokes_the_whole_family(api):
    _, first = session(api, "viewer")
    second = _refresh(api, first["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    assert errors(api, ME, second.json()["access_token"]) == []

    replayed = _refresh(api, first["refresh_token"])  # the old one again: someone copied it
    assert replayed.status_code == 401 and "revoked" in replayed.json()["error"]["message"]
    assert _refresh(api, second.json()["refresh_token"]).status_code == 401  # the family is gone
    assert errors(api, ME, second.json()["access_token"]) == ["UNAUTHENTICATED"]


def test_sign_out_revokes_the_refresh_token_and_the_access_token(api):
    _, signed = session(api, "viewer")
    with api.http(signed["access_token"]) as client:
        assert client.post("/v1/auth/sign-out", json={"refresh_token": signed["refresh_token"]}).status_code == 204
    assert _refresh(api, signed["refresh_token"]).status_code == 401
    assert errors(api, ME, signed["access_token"]) == ["UNAUTHENTICATED"]


def test_an_expired_access_token_is_rejected(api):
    user = user_with_password(api, "viewer")
    api.container.sessions.access_ttl = dt.timedelta(seconds=-1)
    expired = sign_in(api, user).json()["access_token"]
    assert errors(api, ME, expired) == ["UNAUTHENTICATED"]
    assert errors(api, ME, expired[:-2] + "xx") == ["UNAUTHENTICATED"]  # nor is a tampered one


def test_a_user_of_one_tenant_never_acts_in_another(api):
    _, acme = session(api, "admin", tenant="acme")
    stranger = user_with_password(api, "viewer", tenant="globex")
    assert api.data(ME, token=acme["access_token"])["me"]["tenantId"] == "acme"
    body = api.gql('mutation($u: String!) { grantRole(userId: $u, role: "admin") { position } }',
                   {"u": stranger["user_id"]}, token=acme["access_token"]).json()
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    api.project()
    listed = {u["userId"] for u in api.data(USERS, token=acme["access_token"])["users"]}
    assert stranger["user_id"] not in listed
    assert sign_in(api, stranger, tenant="acme").status_code == 401


def test_role_changes_and_deactivation_take_effect_on_the_next_request(api):
    user, signed = session(api, "viewer")
    token = signed["access_token"]
    assert errors(api, USERS, token) == ["FORBIDDEN"]
    api.data('mutation($u: String!) { grantRole(userId: $u, role: "admin") { position } }', {"u": user["user_id"]})
    assert errors(api, USERS, token) == []
    api.data('mutation($u: String!) { deactivateUser(userId: $u) { position } }', {"u": user["user_id"]})
    assert errors(api, ME, token) == ["UNAUTHENTICATED"]
    assert _refresh(api, signed["refresh_token"]).status_code == 401
    assert sign_in(api, user).status_code == 401


def test_changes_made_by_a_signed_in_admin_name_that_user_and_its_address(api):
    admin, signed = session(api, "admin")
    invited = api.data('mutation { inviteUser(input: {email: "new@example.com", role: "viewer"}) { user { userId } } }',
                       token=signed["access_token"])["inviteUser"]["user"]["userId"]
    [event] = api.container.ledger.read_stream(f"user-{invited}")
    assert b'"actor":"user:' + admin["user_id"].encode() in event.metadata
    assert b'"client_address":"127.0.0.1"' in event.metadata
