"""The gateway accepts a console user's access token (Bearer) as it accepts an API key: the user's current
roles decide (inference.run to call models, ledger.read to read receipts), the ledger names `user:<id>`
where a key would put its key id, and a signed-out session is refused at once."""
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import orjson

from tests.fakes.harness import PRICE, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import REPLY, Upstreams
from tests.integration.test_auth_support import session
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture

HELLO = {"model": "gpt-test", "messages": [{"role": "user", "content": "Say hello"}]}


def _deploy(api: Api, upstreams: Upstreams) -> None:
    api.container.deployments.configure(
        "acme", name="primary", provider="openai", model="gpt-upstream", model_name="gpt-test",
        base_url=upstreams.base("user-sessions"), price=PRICE, api_key="sk-upstream-secret")


def _chat(api: Api, token: str) -> Any:
    with api.http(token) as http:
        return http.post("/v1/chat/completions", json=HELLO)


def test_a_developer_chats_with_its_access_token_and_the_ledger_names_the_user(api, upstreams):
    _deploy(api, upstreams)
    user, signed = session(api, "developer")
    answer = _chat(api, signed["access_token"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == REPLY
    [requested] = [orjson.loads(e.payload) for e in api.container.ledger.read(1, 1000) if e.type == "InferenceRequested"]
    assert requested["api_key_id"] == f"user:{user['user_id']}"
    event_id = answer.headers["nexus-receipt"].split("event_id=")[1].split(";")[0]
    with api.http(signed["access_token"]) as http:
        assert http.get(f"/v1/receipts/{event_id}").json()["entry"]["tenant_id"] == "acme"


def test_a_role_without_inference_run_is_refused_and_a_signed_out_session_is_unauthenticated(api, upstreams):
    _deploy(api, upstreams)
    _, viewer = session(api, "viewer")
    refused = _chat(api, viewer["access_token"])
    assert refused.status_code == 403, refused.text
    _, developer = session(api, "developer")
    with api.http(developer["access_token"]) as http:
        assert http.post("/v1/auth/sign-out", json={}).status_code == 204
    gone = _chat(api, developer["access_token"])
    assert gone.status_code == 401 and gone.json()["error"]["type"] == "authentication_error"
    assert _chat(api, "not.a.jwt").status_code == 401


def test_a_deactivated_users_access_token_is_refused_at_once_everywhere_it_is_accepted(api, upstreams):
    _deploy(api, upstreams)
    user, developer = session(api, "developer")
    assert _chat(api, developer["access_token"]).status_code == 200
    api.data("mutation($u: String!) { deactivateUser(userId: $u) { position } }", {"u": user["user_id"]})
    token = developer["access_token"]  # still unexpired: refused because of the user's state, not its age
    assert _chat(api, token).status_code == 401
    with api.http(token) as http:
        assert http.get("/v1/models").status_code == 401
        assert http.get("/v1/audit/bundle").status_code == 401
        assert http.post("/v1/auth/refresh", json={"refresh_token": developer["refresh_token"]}).status_code == 401
