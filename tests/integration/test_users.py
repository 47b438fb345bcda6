"""Users as events: invited with one role, password set once by an invitation, roles granted and revoked,
deactivated; every change says who, from where, and the ledger says when. No hash ever enters the ledger."""
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt

import orjson
import psycopg
import pytest

from domain import users
from domain.rbac import actor_for_role
from tests.integration.test_auth_support import PASSWORD, SET_PASSWORD, errors, invite, session
from tests.integration.test_graphql_harness import api  # noqa: F401 - fixture


def _stream(api, user_id):
    return [(e.type, orjson.loads(e.payload), orjson.loads(e.metadata))
            for e in api.container.ledger.read_stream(users.user_stream(user_id))]


def test_an_invitation_records_who_invited_whom_from_where_and_only_the_token_hash(api):
    user = invite(api, "developer")
    [(kind, payload, metadata)] = _stream(api, user["user_id"])
    assert kind == "UserInvited"
    assert (payload["email"], payload["role"], payload["tenant_id"]) == (user["email"], "developer", "acme")
    assert payload["invited_by"].startswith("key:") and metadata["actor"] == payload["invited_by"]
    assert metadata["client_address"] == "127.0.0.1"
    parsed = users.parse_invitation(user["token"])  # the secret may hold "_" itself: parse, do not split
    assert parsed is not None
    secret = parsed[1]
    everything = b"".join(e.payload + e.metadata for e in api.container.ledger.read(1))
    assert secret.encode() not in everything


def test_the_invitation_sets_the_password_once_and_the_hash_stays_out_of_the_ledger(api, database):
    user = invite(api, "viewer")
    assert api.data(SET_PASSWORD, {"t": user["token"], "p": PASSWORD}, token="")["setPassword"]["position"] > 0
    again = api.gql(SET_PASSWORD, {"t": user["token"], "p": PASSWORD + "!"}, token="").json()
    assert again["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "inviteToken"}

    kinds = [(k, p) for k, p, _ in _stream(api, user["user_id"])]
    assert kinds[-1] == ("UserPasswordChanged", {"user_id": user["user_id"], "via": "invite"})
    with psycopg.connect(database.admin_url) as conn:
        [stored] = conn.execute("SELECT password_hash FROM auth.credentials WHERE user_id = %s",
                                (user["user_id"],)).fetchone()
    assert stored.startswith("$argon2id$")
    everything = b"".join(e.payload + e.metadata for e in api.container.ledger.read(1))
    assert stored.encode() not in everything and PASSWORD.encode() not in everything


def test_an_expired_invitation_is_refused(api):
    owner = actor_for_role("acme", "owner", subject="test")
    old = dt.datetime.now(dt.UTC) - users.INVITE_TTL - dt.timedelta(minutes=1)
    invitation, _ = api.container.users.invite(owner, "late@example.com", "viewer", "test", now=old)
    with pytest.raises(users.InvalidInvitation, match="expired"):
        api.container.users.accept_invitation(invitation.token, PASSWORD, "test")


def test_a_short_password_is_refused_with_its_field(api):
    user = invite(api, "viewer")
    body = api.gql(SET_PASSWORD, {"t": user["token"], "p": "short"}, token="").json()
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "password"}


def test_role_changes_and_deactivation_are_events_with_actor_and_address(api):
    user = invite(api, "analyst")
    uid = {"u": user["user_id"]}
    api.data('mutation($u: String!) { grantRole(userId: $u, role: "auditor") { position } }', uid)
    api.data('mutation($u: String!) { revokeRole(userId: $u, role: "analyst") { position } }', uid)
    api.data('mutation($u: String!) { deactivateUser(userId: $u, reason: "left") { position } }', uid)
    changes = _stream(api, user["user_id"])[1:]
    assert [(k, p.get("role") or p.get("reason")) for k, p, _ in changes] == [
        ("RoleGranted", "auditor"), ("RoleRevoked", "analyst"), ("UserDeactivated", "left")]
    assert all(m["actor"].startswith("key:") and m["client_address"] == "127.0.0.1" for _, _, m in changes)

    api.project()
    [listed] = [u for u in api.data("{ users { userId roles active hasPassword } }")["users"]
                if u["userId"] == user["user_id"]]
    assert listed == {"userId": user["user_id"], "roles": ["auditor"], "active": False, "hasPassword": False}


def test_an_admin_cannot_make_owners_but_an_owner_can(api):
    # the admin key maps onto the admin role, which lacks owners.write
    body = api.gql('mutation { inviteUser(input: {email: "boss@example.com", role: "owner"}) { inviteToken } }').json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    owner = actor_for_role("acme", "owner", subject="user:founder")
    invitation, _ = api.container.users.invite(owner, "boss@example.com", "owner", "10.0.0.1")
    assert api.container.users.state(invitation.user_id).roles == {"owner"}


def test_inviting_the_same_email_twice_is_a_conflict(api):
    user = invite(api, "viewer")
    body = api.gql('mutation($e: String!) { inviteUser(input: {email: $e, role: "viewer"}) { inviteToken } }',
                   {"e": user["email"].upper()}).json()
    assert body["errors"][0]["extensions"]["code"] == "CONFLICT"


def test_users_and_roles_are_tenant_scoped_and_never_show_a_hash(api):
    mine, theirs = invite(api, "viewer", tenant="acme"), invite(api, "viewer", tenant="globex")
    api.project()
    acme = {u["userId"] for u in api.data("{ users { userId } }", tenant="acme")["users"]}
    globex = {u["userId"] for u in api.data("{ users { userId } }", tenant="globex")["users"]}
    assert mine["user_id"] in acme and theirs["user_id"] not in acme
    assert theirs["user_id"] in globex and mine["user_id"] not in globex
    # acme's admin cannot touch globex's user: it does not exist as far as acme can tell
    body = api.gql('mutation($u: String!) { grantRole(userId: $u, role: "admin") { position } }',
                   {"u": theirs["user_id"]}).json()
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert "hash" not in str(api.data("{ roles { name permissions } }")).lower()


def test_a_signed_in_user_changes_its_own_password_with_the_current_one(api):
    user, signed = session(api, "viewer")
    change = ("mutation($c: String!, $p: String!) { setPassword(currentPassword: $c, password: $p) { position } }")
    assert errors(api, change, signed["access_token"], {"c": "wrong password!", "p": PASSWORD + "2"}) == [
        "BAD_USER_INPUT"]
    assert errors(api, change, signed["access_token"], {"c": PASSWORD, "p": PASSWORD + "2"}) == []
    assert _stream(api, user["user_id"])[-1][2]["actor"] == f"user:{user['user_id']}"
    # an API key has no password of its own to change
    assert [e["extensions"]["code"] for e in api.gql(change, {"c": "x", "p": PASSWORD}).json()["errors"]] == ["FORBIDDEN"]
