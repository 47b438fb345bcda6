"""Retries with backoff on 429/5xx, fallbacks on errors and timeouts, load balancing; every attempt recorded."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import collections

import openai
import pytest

from tests.fakes.harness import gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import REPLY, slow, status

HELLO = [{"role": "user", "content": "Say hello"}]


def outcomes(attempts):
    return [(a["attempt"], a["deployment"], a["outcome"], a["status"]) for a in attempts]


def test_a_rate_limited_deployment_is_retried_with_backoff(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(status(429), status(503))
    answer = gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    assert answer.choices[0].message.content == REPLY
    [p] = gw.payloads("InferenceCompleted")
    assert outcomes(p["attempts"]) == [(1, "primary", "rate_limited", 429), (2, "primary", "upstream_error", 503),
                                       (3, "primary", "ok", 200)]


def test_after_its_retries_a_failing_deployment_falls_back_to_the_next_priority(gw):
    primary = gw.deploy("primary", max_retries=1)
    gw.deploy("fallback", priority=1)
    gw.script(primary).then(status(500), status(500))
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    [p] = gw.payloads("InferenceCompleted")
    assert p["deployment"] == "fallback"
    assert outcomes(p["attempts"]) == [(1, "primary", "upstream_error", 500), (2, "primary", "upstream_error", 500),
                                       (3, "fallback", "ok", 200)]


def test_a_deployment_that_times_out_falls_back(gw):
    primary = gw.deploy("primary", timeout_ms=200)
    gw.deploy("fallback", priority=1)
    gw.script(primary).then(slow(2.0))
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    [p] = gw.payloads("InferenceCompleted")
    assert outcomes(p["attempts"]) == [(1, "primary", "timeout", None), (2, "fallback", "ok", 200)]
    assert 150_000 <= p["attempts"][0]["latency_us"] < 1_000_000  # the 200 ms limit, give or take a clock tick


def test_a_request_that_runs_out_of_time_is_a_504_and_recorded_as_a_timeout(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(slow(2.0))
    with pytest.raises(openai.APIStatusError) as raised:
        gw.client().chat.completions.create(model="gpt-test", messages=HELLO, extra_body={"timeout": 0.3})
    assert raised.value.status_code == 504
    assert raised.value.body["code"] == "upstream_timeout"
    [failed] = gw.events("InferenceFailed")
    assert raised.value.response.headers["nexus-receipt"].startswith(f"position={failed.position};")
    [p] = gw.payloads("InferenceFailed")
    assert (p["reason"], p["deployment"]) == ("timeout", "primary")
    assert len(gw.events("InferenceRequested")) == 1 and not gw.events("InferenceCompleted")


def test_the_timeout_header_works_like_the_body_field(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(slow(2.0))
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": HELLO},
                             headers={"nexus-timeout": "0.2"})
    assert response.status_code == 504 and response.json()["error"]["type"] == "api_error"


def test_when_every_deployment_fails_the_client_gets_a_502_and_each_attempt_is_recorded(gw):
    a = gw.deploy("a", max_retries=0)
    b = gw.deploy("b", priority=1, max_retries=1)
    gw.script(a).then(status(500))
    gw.script(b).then(status(429), status(502))
    with pytest.raises(openai.APIStatusError) as raised:
        gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    assert raised.value.status_code == 502 and "Traceback" not in raised.value.response.text
    [p] = gw.payloads("InferenceFailed")
    assert p["reason"] == "upstream_error"
    assert outcomes(p["attempts"]) == [(1, "a", "upstream_error", 500), (2, "b", "rate_limited", 429),
                                       (3, "b", "upstream_error", 502)]


def test_an_upstream_400_goes_back_to_the_client_without_fallback(gw):
    a = gw.deploy("a")
    b = gw.deploy("b", priority=1)
    gw.script(a).then(status(400))
    with pytest.raises(openai.BadRequestError):
        gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    [p] = gw.payloads("InferenceFailed")
    assert p["reason"] == "bad_request" and outcomes(p["attempts"]) == [(1, "a", "bad_request", 400)]
    assert gw.script(b).requests == []


def test_load_is_spread_round_robin_across_deployments_of_one_priority(gw):
    gw.deploy("east", region="us-east")
    gw.deploy("west", region="us-west")
    client = gw.client()
    for _ in range(6):
        client.chat.completions.create(model="gpt-test", messages=HELLO)
    served = collections.Counter((p["deployment"], p["region"]) for p in gw.payloads("InferenceCompleted"))
    assert served == {("east", "us-east"): 3, ("west", "us-west"): 3}


def test_a_stream_falls_back_before_its_first_chunk(gw):
    primary = gw.deploy("primary", max_retries=0)
    gw.deploy("fallback", priority=1)
    gw.script(primary).then(status(500))
    chunks = list(gw.client().chat.completions.create(model="gpt-test", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    [p] = gw.payloads("InferenceCompleted")
    assert outcomes(p["attempts"]) == [(1, "primary", "upstream_error", 500), (2, "fallback", "ok", 200)]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_overload_is_retried_through_litellm_and_recorded_as_529(gw, stream):
    upstream = gw.deploy("claude", provider="anthropic")
    gw.script(upstream).then(status(529))
    answer = gw.client().chat.completions.create(model="gpt-test", messages=HELLO, max_tokens=32, stream=stream)
    if stream:
        list(answer)
    [p] = gw.payloads("InferenceCompleted")
    # litellm raises it as a 500; the attempt records Anthropic's own status
    assert [(a["outcome"], a["status"]) for a in p["attempts"]] == [("upstream_error", 529), ("ok", 200)]
