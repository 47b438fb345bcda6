"""Streams record usage as reliably as whole responses: cut by the client, cut by the upstream, or without usage."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.fakes.harness import gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import REPLY, cut, drip, no_usage

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]  # five prompt tokens


def test_a_stream_the_client_cuts_still_records_what_was_produced(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(drip(0.1))
    received = []
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.token}"}, timeout=10) as http:
        with http.stream("POST", "/v1/chat/completions", json={
                "model": "gpt-test", "messages": HELLO, "stream": True,
                "stream_options": {"include_usage": True}}) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                if len(received) == 3:  # the role chunk and two words, then the client hangs up
                    break
    [p] = gw.wait_for("InferenceCompleted")
    assert p["finish"] == "client_cancelled" and p["usage_source"] == "counted"
    words = "".join(c["choices"][0]["delta"].get("content", "") for c in received)
    assert words == "Hello from"
    assert 2 <= p["tokens_out"] <= 3  # what was produced (a third word may be in flight), counted by tiktoken
    assert p["tokens_in"] > 0 and p["cost_micros"] > 0
    requests = gw.payloads("InferenceRequested")
    assert len(requests) == 1 and requests[0]["stream"] is True


def test_a_stream_the_upstream_cuts_is_recorded_and_the_client_told(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(cut(2))
    stream = gw.client().chat.completions.create(model="gpt-test", messages=HELLO, stream=True)
    got = []
    with pytest.raises(openai.APIError, match="stream broke"):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "Hello from"
    [p] = gw.wait_for("InferenceCompleted")
    assert (p["finish"], p["usage_source"], p["tokens_out"]) == ("upstream_cut", "counted", 2)


def test_a_stream_without_provider_usage_is_counted_and_the_client_still_gets_usage(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(no_usage())
    chunks = list(gw.client().chat.completions.create(model="gpt-test", messages=HELLO, stream=True,
                                                      stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    [p] = gw.payloads("InferenceCompleted")
    assert (p["usage_source"], p["finish"], p["tokens_out"]) == ("counted", "complete", 6)  # tiktoken's count
    assert (p["usage_estimated"], p["usage_tokenizer"]) == (True, "cl100k_base")
    assert p["tokens_in"] == 5 + 3 + 3  # the message's words, its framing, the reply's priming
    assert chunks[-1].usage.completion_tokens == p["tokens_out"]
    assert chunks[-1].model_extra["nexus_receipt"]["event_id"] == str(gw.events("InferenceCompleted")[0].event_id)


def test_an_anthropic_stream_cut_by_the_client_is_recorded(gw):
    upstream = gw.deploy("claude", provider="anthropic")
    gw.script(upstream).then(drip(0.1))
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.token}"}, timeout=10) as http:
        with http.stream("POST", "/v1/chat/completions", json={
                "model": "gpt-test", "messages": HELLO, "stream": True, "max_tokens": 32}) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and "from" in line:
                    break
    [p] = gw.wait_for("InferenceCompleted")
    assert p["finish"] == "client_cancelled" and p["provider"] == "anthropic" and p["tokens_out"] >= 2
