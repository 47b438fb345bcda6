"""Errors in OpenAI's format with the right status; a request refused before any upstream call records nothing."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fakes.harness import PRICE, gw, no_change_notices, upstreams  # noqa: F401 - fixtures

HELLO = [{"role": "user", "content": "Say hello"}]


def assert_openai_error(response, status, type_):
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == type_ and set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text


def test_a_missing_or_revoked_key_is_401_and_records_nothing(gw):
    gw.deploy("primary")
    before = gw.size()
    with pytest.raises(openai.AuthenticationError):
        gw.client(token="nx_000000000000_" + "A" * 43).chat.completions.create(model="gpt-test", messages=HELLO)
    with gw.http() as http:
        assert_openai_error(http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": HELLO},
                                      headers={"authorization": ""}), 401, "authentication_error")
    key, _ = gw.container.identity.issue_key("acme", ["inference"])
    gw.client(token=key.token).chat.completions.create(model="gpt-test", messages=HELLO)
    gw.container.identity.revoke_key("acme", key.key_id)
    after_revocation = gw.size()
    with pytest.raises(openai.AuthenticationError):
        gw.client(token=key.token).chat.completions.create(model="gpt-test", messages=HELLO)
    assert gw.size() == after_revocation
    assert len(gw.events("InferenceCompleted")) == 1 and before < after_revocation


def test_a_key_revoked_by_another_process_gets_no_answer_and_the_withheld_call_is_recorded(no_change_notices, gw,
                                                                                           database):
    # This process remembers keys it authenticated and lets them go ahead, reading the key's stream while
    # the upstream call runs; the answer waits for that read. A revocation by another process that this one
    # has not heard of (no change notice yet) is only seen there.
    from adapters.postgres.ledger_store import PostgresLedger
    from application.identity import IdentityService

    upstream = gw.deploy("primary")
    key, _ = gw.container.identity.issue_key("acme", ["inference"])
    gw.client(token=key.token).chat.completions.create(model="gpt-test", messages=HELLO)
    with PostgresLedger(database.app_url) as other_ledger:
        IdentityService(other_ledger).revoke_key("acme", key.key_id)
    calls = len(gw.script(upstream).requests)
    for stream in (False, True):
        with pytest.raises(openai.AuthenticationError):
            gw.client(token=key.token).chat.completions.create(model="gpt-test", messages=HELLO, stream=stream)
    assert len(gw.script(upstream).requests) == calls + 1  # the first went ahead; the next was read first
    [failed] = gw.payloads("InferenceFailed")
    assert failed["reason"] == "key_revoked" and [a["outcome"] for a in failed["attempts"]] == ["ok"]
    assert len(gw.events("InferenceRequested")) == 2 and len(gw.events("InferenceCompleted")) == 1


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "gpt-secret", "messages": HELLO}),  # not 404: it learns no model names
    ("/v1/chat/completions", b"{not json"),
    ("/v1/embeddings", {"model": "gpt-test", "input": ""}),
])
def test_a_key_revoked_by_another_process_is_told_401_whatever_else_is_wrong(gw, database, path, body):
    from adapters.postgres.ledger_store import PostgresLedger
    from application.identity import IdentityService

    gw.deploy("primary")
    key, _ = gw.container.identity.issue_key("acme", ["inference"])
    gw.client(token=key.token).chat.completions.create(model="gpt-test", messages=HELLO)
    with PostgresLedger(database.app_url) as other_ledger:
        IdentityService(other_ledger).revoke_key("acme", key.key_id)
    before = gw.size()
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key.token}"}, timeout=30) as http:
        sent = http.post(path, content=body) if isinstance(body, bytes) else http.post(path, json=body)
    assert_openai_error(sent, 401, "authentication_error")
    assert gw.size() == before


def test_a_key_without_the_inference_scope_is_403(gw):
    gw.deploy("primary")
    reader, _ = gw.container.identity.issue_key("acme", ["read"])
    before = gw.size()
    with pytest.raises(openai.PermissionDeniedError) as raised:
        gw.client(token=reader.token).chat.completions.create(model="gpt-test", messages=HELLO)
    assert raised.value.body["code"] == "insufficient_scope"
    assert gw.size() == before


def test_an_unknown_model_is_404_and_records_nothing(gw):
    gw.deploy("primary", model_name="gpt-test")
    gw.deploy("other", model_name="secret-model", tenant="acme")
    gw.container.identity.create_tenant("globex")
    outsider, _ = gw.container.identity.issue_key("globex", ["inference"])
    before = gw.size()
    with pytest.raises(openai.NotFoundError) as raised:
        gw.client().chat.completions.create(model="gpt-unknown", messages=HELLO)
    assert raised.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):  # another tenant's model names do not exist for this key
        gw.client(token=outsider.token).chat.completions.create(model="secret-model", messages=HELLO)
    assert gw.size() == before


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"model": "gpt-test", "messages": []}', "messages"),
    (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "timeout": -1}', "timeout"),
    (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "user": "a@b.example"}', "user"),
])
def test_a_malformed_request_is_400_and_records_nothing(gw, body, param):
    gw.deploy("primary")
    before = gw.size()
    with gw.http() as http:
        response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "invalid_request_error")
    assert response.json()["error"]["param"] == param
    assert gw.size() == before


@pytest.mark.parametrize("body, param", [
    ({"model": "gpt-test"}, "input"),
    ({"model": "gpt-test", "input": 5}, "input"),
    ({"model": "gpt-test", "input": {"text": "hi"}}, "input"),
    ({"model": "gpt-test", "input": ["hi", ""]}, "input"),
    ({"model": "gpt-test", "input": [[1, 2], []]}, "input"),
    ({"model": "gpt-test", "input": ["hi", [1, 2]]}, "input"),
    ({"model": "gpt-test", "input": "hi", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "gpt-test", "input": "hi", "dimensions": 0}, "dimensions"),
])
def test_a_malformed_embeddings_request_is_400_and_records_nothing(gw, body, param):
    upstream = gw.deploy("primary")
    before = gw.size()
    with gw.http() as http:
        response = http.post("/v1/embeddings", json=body)
    assert_openai_error(response, 400, "invalid_request_error")
    assert response.json()["error"]["param"] == param
    assert gw.size() == before and gw.script(upstream).requests == []


def test_token_arrays_for_a_model_served_only_by_gemini_are_400_before_any_upstream_call(gw):
    upstream = gw.deploy("gem", provider="gemini", model_name="gem-embed", model="text-embedding-fake")
    before = gw.size()
    with gw.http() as http:
        response = http.post("/v1/embeddings", json={"model": "gem-embed", "input": [[1, 2, 3]]})
    assert_openai_error(response, 400, "invalid_request_error")
    assert response.json()["error"]["code"] == "token_input_not_supported"
    assert gw.size() == before and gw.script(upstream).requests == []


def test_embeddings_of_a_model_without_an_embeddings_deployment_is_400(gw):
    gw.deploy("claude", provider="anthropic", model_name="claude-test")
    before = gw.size()
    with pytest.raises(openai.BadRequestError):
        gw.client().embeddings.create(model="claude-test", input="hello")
    assert gw.size() == before


def test_an_unreachable_upstream_is_a_502_not_a_stack_trace(gw):
    gw.container.deployments.configure("acme", name="dead", provider="openai_compatible", model="m",
                                       model_name="gpt-test", base_url="http://127.0.0.1:9/v1",
                                       price=PRICE, max_retries=0)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": HELLO})
    assert_openai_error(response, 502, "api_error")
    [p] = gw.payloads("InferenceFailed")
    assert p["reason"] == "upstream_error" and p["attempts"][0]["detail"].startswith("upstream unreachable")
