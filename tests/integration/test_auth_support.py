"""Helpers for the user and session tests: invite a user, set its password, sign it in. No tests here."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.test_graphql_harness import Api

PASSWORD = "correct horse battery staple"
INVITE = "mutation($e: String!, $r: String!) { inviteUser(input: {email: $e, role: $r}) { user { userId } inviteToken } }"
SET_PASSWORD = "mutation($t: String!, $p: String!) { setPassword(inviteToken: $t, password: $p) { position } }"


def email() -> str:
    return f"u{uuid.uuid4().hex[:8]}@example.com"


def invite(api: Api, role: str, *, tenant: str = "acme", address: str | None = None) -> dict[str, str]:
    """Invite through GraphQL with the tenant's admin key; {user_id, email, token}."""
    who = email()
    data = api.data(INVITE, {"e": who, "r": role}, tenant=tenant)["inviteUser"]
    return {"user_id": data["user"]["userId"], "email": who, "token": data["inviteToken"]}


def user_with_password(api: Api, role: str, *, tenant: str = "acme") -> dict[str, str]:
    user = invite(api, role, tenant=tenant)
    with api.http() as client:
        answer = client.post("/v1/auth/accept-invite", json={"token": user["token"], "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return user


def sign_in(api: Api, user: dict[str, str], *, tenant: str = "acme", password: str = PASSWORD) -> Any:
    with api.http() as client:
        return client.post("/v1/auth/sign-in", json={"tenant": tenant, "email": user["email"], "password": password})


def session(api: Api, role: str, *, tenant: str = "acme") -> tuple[dict[str, str], dict[str, Any]]:
    """A signed-in user of `role`: (the user, the sign-in answer)."""
    user = user_with_password(api, role, tenant=tenant)
    answer = sign_in(api, user, tenant=tenant)
    assert answer.status_code == 200, answer.text
    return user, answer.json()


def errors(api: Api, document: str, token: str, variables: dict[str, Any] | None = None) -> list[str]:
    """The error codes of a GraphQL call made with `token` ([] when it succeeded)."""
    body = api.gql(document, variables, token=token).json()
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]


def end_session(api: Api, how: str, user: dict[str, str], access_token: str) -> None:
    """End a signed-in user's session the way `how` says: 'sign-out' (the user's own) or 'deactivation'
    (by the tenant's admin key)."""
    if how == "sign-out":
        with api.http(access_token) as http:
            assert http.post("/v1/auth/sign-out", json={}).status_code == 204
    else:
        api.data("mutation($u: String!) { deactivateUser(userId: $u) { position } }", {"u": user["user_id"]})
