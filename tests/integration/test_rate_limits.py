"""Rate limits per API key and per signed-in user (NEXUS_RATE_LIMIT_*): token buckets in front of /v1 and
/graphql; a refusal is a 429 with Retry-After, in the OpenAI error format on /v1 and as a typed
RATE_LIMITED error on /graphql; 0 turns a limit off."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_auth_support import session, sign_in
from tests.integration.test_graphql_harness import Api, start_api
from tests.integration.test_socket_support import on_one_socket

ME = "{ me { subject } }"


@pytest.fixture
def limited(database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """start(**settings): the API with NEXUS_RATE_LIMIT_<NAME> set from keyword arguments."""
    running: list[tuple[Api, Any]] = []

    def start(**limits: float) -> Api:
        for name, value in limits.items():
            monkeypatch.setenv(f"NEXUS_RATE_LIMIT_{name.upper()}", str(value))
        api, server = start_api(database, tmp_path / f"data{len(running)}")
        running.append((api, server))
        return api

    yield start
    for api, server in running:
        server.stop()
        api.container.close()


def _models(api: Api, token: str) -> Any:
    with api.http(token) as client:
        return client.get("/v1/models")


def test_an_api_key_gets_its_burst_then_429_with_retry_after_in_the_openai_format(limited):
    api = limited(key_per_minute=6, key_burst=3)
    codes = [_models(api, api.keys["acme"]).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = _models(api, api.keys["acme"])
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 10  # one request every 10 s
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "API key" in error["message"]
    assert _models(api, api.keys["globex"]).status_code == 200  # another key: its own bucket


def test_one_key_shares_its_bucket_between_rest_and_graphql_and_graphql_answers_rate_limited(limited):
    api = limited(key_per_minute=6, key_burst=2)
    assert _models(api, api.keys["acme"]).status_code == 200
    assert api.gql(ME).status_code == 200
    refused = api.gql(ME)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    [error] = refused.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["retryAfter"] >= 1


def test_a_user_is_limited_across_all_of_its_sessions(limited):
    api = limited(user_per_minute=6, user_burst=2)
    user, first = session(api, "viewer")
    second = sign_in(api, user).json()  # sign-in itself is not counted (it has its own limiter)
    assert api.gql(ME, token=first["access_token"]).status_code == 200
    assert api.gql(ME, token=second["access_token"]).status_code == 200
    refused = api.gql(ME, token=first["access_token"])
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert "user" in refused.json()["errors"][0]["message"]
    assert api.gql(ME).status_code == 200  # the tenant's API key is not that user


def test_a_users_bucket_is_shared_between_the_gateway_and_graphql(limited):
    api = limited(user_per_minute=6, user_burst=2)
    _, signed = session(api, "developer")
    assert _models(api, signed["access_token"]).status_code == 200
    assert api.gql(ME, token=signed["access_token"]).status_code == 200
    refused = _models(api, signed["access_token"])
    assert refused.status_code == 429 and "user" in refused.json()["error"]["message"]


def test_a_bucket_refills_at_the_configured_rate(limited):
    # Two a second: a busy machine (CI runs two suites at once) may space two requests 100 ms apart,
    # but not the 500 ms that would refill the bucket between them.
    api = limited(key_per_minute=120, key_burst=1)
    assert _models(api, api.keys["acme"]).status_code == 200
    assert _models(api, api.keys["acme"]).status_code == 429
    time.sleep(0.6)
    assert _models(api, api.keys["acme"]).status_code == 200


def test_someone_without_the_secret_cannot_drain_a_real_keys_bucket(limited):
    api = limited(key_per_minute=6, key_burst=2)
    key_id = api.keys["acme"].split("_")[1]
    forged = f"nx_{key_id}_{'A' * 43}"
    assert [_models(api, forged).status_code for _ in range(3)] == [401, 401, 429]
    assert _models(api, api.keys["acme"]).status_code == 200


def test_zero_turns_the_limits_off(limited):
    api = limited(key_per_minute=0, user_per_minute=0, key_burst=1)
    assert {_models(api, api.keys["acme"]).status_code for _ in range(20)} == {200}
    assert api.gql(ME).status_code == 200


@pytest.mark.parametrize("cookie", ["nexus_access=junk; nexus_access={jwt}", 'nexus_access="{jwt}"'],
                         ids=["duplicate-cookie", "quoted-cookie"])
def test_the_limiter_reads_the_access_cookie_exactly_as_graphql_does(limited, cookie):
    """A cookie header the limiter would parse differently from the app (first vs last duplicate, quotes)
    must not let a signed-in user past its bucket while GraphQL still authenticates the request."""
    import httpx

    api = limited(user_per_minute=6, user_burst=2)
    _, signed = session(api, "viewer")
    headers = {"cookie": cookie.format(jwt=signed["access_token"])}
    with httpx.Client(base_url=api.url, headers=headers, timeout=30) as client:
        answers = [client.post("/graphql", json={"query": ME}) for _ in range(3)]
    assert answers[0].status_code == 200 and "errors" not in answers[0].json(), answers[0].json()
    assert [a.status_code for a in answers] == [200, 200, 429]


def test_operations_over_a_graphql_websocket_draw_from_the_same_bucket(limited):
    """One connection is not a request rate, but each operation on it is: else any query or mutation
    sent over the websocket escaped every limit."""
    api = limited(key_per_minute=6, key_burst=2)
    assert on_one_socket(api, api.keys["acme"], [None] * 4) == ["key:", "key:", "RATE_LIMITED", "RATE_LIMITED"]
    assert _models(api, api.keys["acme"]).status_code == 429  # and REST sees the same, spent bucket


def test_a_sockets_operations_count_against_its_user_after_the_access_token_expired(limited):
    api = limited(user_per_minute=6, user_burst=2)
    api.container.sessions.access_ttl = dt.timedelta(seconds=2)
    _, signed = session(api, "viewer")
    wait_past_expiry = lambda: time.sleep(2.5)  # noqa: E731 - the token expires; the session does not
    # burst 2, one more every 10 s: the first after the expiry is allowed (the 2nd token), then refused
    assert on_one_socket(api, signed["access_token"], [None, wait_past_expiry, None, None, None]) == \
        ["user:", "user:", "RATE_LIMITED", "RATE_LIMITED"]
