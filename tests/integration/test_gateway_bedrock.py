"""AWS Bedrock (Llama, Mistral, Claude... by their Bedrock model ids) through litellm and its Converse API.

The fake speaks Bedrock's wire: Converse JSON, the binary AWS event stream for converse-stream, AWS's error
bodies, and it checks every request's SigV4 signature by hand against the fake key pair (or a Bedrock API
key as a bearer token), refusing anything else with 403 as AWS does.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import json

import httpx
import openai
import pytest

from domain.deployments import InvalidDeployment
from tests.fakes.harness import PRICE, gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import BEDROCK_API_KEY, BEDROCK_KEY_ID, REPLY, cut, drip, no_usage, status

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]  # five prompt tokens at the fake
LLAMA = "meta.llama3-3-70b-instruct-v1:0"


def test_a_llama_on_bedrock_answers_whole_and_streamed_signed_with_the_deployments_own_key_pair(gw, monkeypatch):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "the-hosts-own-token")  # never to be used for a tenant
    upstream = gw.deploy("llama-eu", provider="bedrock", model_name="llama-test", model=LLAMA, region="eu-west-1")
    client = gw.client()

    answer = client.chat.completions.create(model="llama-test", max_tokens=64, messages=[
        {"role": "system", "content": "Be brief"}, *HELLO])
    chunks = list(client.chat.completions.create(model="llama-test", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))

    assert answer.choices[0].message.content == REPLY and answer.usage.prompt_tokens == 7
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.completion_tokens == 5
    sent = gw.script(upstream).requests
    assert [r["path"].split("/model/")[1] for r in sent] == [f"{LLAMA}/converse", f"{LLAMA}/converse-stream"]
    assert [(r["auth"], r["region"]) for r in sent] == [("sigv4", "eu-west-1")] * 2
    assert sent[0]["body"]["system"] == [{"text": "Be brief"}]
    assert sent[0]["body"]["inferenceConfig"]["maxTokens"] == 64
    recorded = gw.payloads("InferenceCompleted")
    assert [(p["provider"], p["model"], p["region"], p["tokens_in"], p["tokens_out"], p["usage_source"])
            for p in recorded] == [("bedrock", LLAMA, "eu-west-1", 7, 5, "provider"), ("bedrock", LLAMA, "eu-west-1",
                                                                                      5, 5, "provider")]


def test_a_bedrock_api_key_is_sent_as_a_bearer_token(gw):
    upstream = gw.deploy("llama", provider="bedrock", model_name="llama-test", model=LLAMA, api_key=BEDROCK_API_KEY)
    assert gw.client().chat.completions.create(model="llama-test", messages=HELLO).choices[0].message.content == REPLY
    [sent] = gw.script(upstream).requests
    assert sent["auth"] == "api_key" and sent["headers"]["authorization"] == f"Bearer {BEDROCK_API_KEY}"


WEATHER_TOOL = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                  "parameters": {"type": "object",
                                                                 "properties": {"city": {"type": "string"}}}}}]


def test_tools_go_as_bedrocks_tool_config_and_tool_use_comes_back_as_openai_tool_calls(gw):
    upstream = gw.deploy("llama", provider="bedrock", model_name="llama-test", model=LLAMA)
    tools = WEATHER_TOOL
    answer = gw.client().chat.completions.create(model="llama-test", messages=HELLO, tools=tools)
    [call] = answer.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert answer.choices[0].finish_reason == "tool_calls"
    [sent] = gw.script(upstream).requests
    assert sent["body"]["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"


# Bedrock streams tool use for Claude; for Llama 3.3 it does not, and litellm calls Converse whole and
# streams its answer to us: the client sees the same deltas either way.
@pytest.mark.parametrize(("model", "path"), [("anthropic.claude-3-5-sonnet-20240620-v1:0", "/converse-stream"),
                                             (LLAMA, "/converse")])
def test_a_streamed_tool_use_comes_back_as_openai_tool_call_deltas_and_is_recorded_with_bedrocks_usage(
        gw, model, path):
    upstream = gw.deploy("llama", provider="bedrock", model_name="llama-test", model=model)
    chunks = list(gw.client().chat.completions.create(model="llama-test", messages=HELLO, tools=WEATHER_TOOL,
                                                      stream=True, stream_options={"include_usage": True}))
    deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert {d.function.name for d in deltas if d.function and d.function.name} == {"get_weather"}
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens == 6
    [p] = gw.wait_for("InferenceCompleted")
    assert (p["finish"], p["usage_source"], p["tokens_out"]) == ("complete", "provider", 6)
    [sent] = gw.script(upstream).requests
    assert sent["path"].endswith(path)


def test_throttling_is_retried_and_each_attempt_recorded(gw):
    upstream = gw.deploy("llama", provider="bedrock", model_name="llama-test", model=LLAMA)
    gw.script(upstream).then(status(429), status(503))
    assert gw.client().chat.completions.create(model="llama-test", messages=HELLO).choices[0].message.content == REPLY
    [p] = gw.payloads("InferenceCompleted")
    assert [(a["outcome"], a["status"]) for a in p["attempts"]] == [
        ("rate_limited", 429), ("upstream_error", 503), ("ok", 200)]


def test_a_key_pair_aws_refuses_is_an_auth_failure_that_falls_back_to_the_next_deployment(gw):
    refused = gw.deploy("llama-wrong", provider="bedrock", model_name="llama-test", model=LLAMA,
                        api_key=f"{BEDROCK_KEY_ID}:not-the-secret-access-key-at-all")
    gw.deploy("llama-right", provider="bedrock", model_name="llama-test", model=LLAMA, priority=1)
    assert gw.client().chat.completions.create(model="llama-test", messages=HELLO).choices[0].message.content == REPLY
    assert len(gw.script(refused).requests) == 1  # an auth failure is not retried on the same deployment
    [p] = gw.payloads("InferenceCompleted")
    assert [(a["deployment"], a["outcome"], a["status"]) for a in p["attempts"]] == [
        ("llama-wrong", "auth", 403), ("llama-right", "ok", 200)]


def test_an_event_stream_cut_by_bedrock_is_recorded_with_what_was_produced(gw):
    upstream = gw.deploy("llama", provider="bedrock", model_name="llama-test", model=LLAMA)
    gw.script(upstream).then(cut(2))
    got = []
    with pytest.raises(openai.APIError):
        for chunk in gw.client().chat.completions.create(model="llama-test", messages=HELLO, stream=True):
            got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(got) == "Hello from"
    [p] = gw.wait_for("InferenceCompleted")
    assert (p["finish"], p["usage_source"], p["tokens_out"]) == ("upstream_cut", "counted", 2)


def test_a_bedrock_stream_the_client_cuts_is_recorded(gw):
    upstream = gw.deploy("llama", provider="bedrock", model_name="llama-test", model=LLAMA)
    gw.script(upstream).then(drip(0.1))
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.token}"}, timeout=10) as http:
        with http.stream("POST", "/v1/chat/completions", json={
                "model": "llama-test", "messages": HELLO, "stream": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and "from" in line:
                    break
    [p] = gw.wait_for("InferenceCompleted")
    assert (p["finish"], p["provider"], p["usage_source"]) == ("client_cancelled", "bedrock", "counted")
    assert p["tokens_out"] >= 2


def test_titan_embeddings_are_answered_in_openais_shape_one_invoke_per_text_with_titans_own_token_counts(gw):
    upstream = gw.deploy("titan", provider="bedrock", model_name="titan-embed", model="amazon.titan-embed-text-v2:0",
                         region="eu-central-1")
    client = gw.client()
    encoded = client.embeddings.create(model="titan-embed", input=["one two three", "four"])  # SDK default: base64
    plain = client.embeddings.create(model="titan-embed", input="five six", encoding_format="float", dimensions=3)

    assert [d.embedding for d in encoded.data] == [[13.0, 0.5, -0.25, 1.0], [4.0, 0.5, -0.25, 1.0]]
    assert [d.embedding for d in plain.data] == [[8.0, 0.5, -0.25]]
    sent = gw.script(upstream).requests
    assert [r["path"].split("/model/")[1] for r in sent] == ["amazon.titan-embed-text-v2:0/invoke"] * 3
    assert [r["body"]["inputText"] for r in sent] == ["one two three", "four", "five six"]
    assert sent[2]["body"]["dimensions"] == 3
    assert {(r["auth"], r["region"]) for r in sent} == {("sigv4", "eu-central-1")}
    recorded = gw.payloads("InferenceCompleted")
    assert [(p["kind"], p["provider"], p["usage_source"], p["usage_estimated"]) for p in recorded] == [
        ("embeddings", "bedrock", "provider", False)] * 2
    # Titan's inputTextTokenCount of each text (the fake's is 10 per word), summed over the batch
    assert [p["tokens_in"] for p in recorded] == [40, 20]
    assert [encoded.usage.prompt_tokens, plain.usage.prompt_tokens] == [40, 20]


def test_cohere_embeddings_on_bedrock_go_as_one_batch_and_record_the_input_tokens_bedrock_bills(gw):
    upstream = gw.deploy("cohere", provider="bedrock", model_name="cohere-embed", model="cohere.embed-english-v3")
    answer = gw.client().embeddings.create(model="cohere-embed", input=["one two three", "four"],
                                           encoding_format="float")
    assert [d.embedding for d in answer.data] == [[13.0, 0.5, -0.25], [4.0, 0.5, -0.25]]
    [sent] = gw.script(upstream).requests
    assert sent["body"]["texts"] == ["one two three", "four"]
    [recorded] = gw.payloads("InferenceCompleted")  # Cohere's body has no count; Bedrock's header has
    assert (recorded["usage_source"], recorded["usage_estimated"]) == ("provider", False)
    assert recorded["tokens_in"] == answer.usage.prompt_tokens == (7 * 3 + 1) + (7 * 1 + 1)


def test_bedrock_embeddings_without_a_billed_count_are_counted_by_the_gateway(gw):
    upstream = gw.deploy("cohere", provider="bedrock", model_name="cohere-embed", model="cohere.embed-english-v3")
    gw.script(upstream).then(no_usage())
    answer = gw.client().embeddings.create(model="cohere-embed", input=["one two three", "four"],
                                           encoding_format="float")
    [recorded] = gw.payloads("InferenceCompleted")
    assert (recorded["usage_source"], recorded["usage_estimated"]) == ("counted", True)
    assert recorded["tokens_in"] == answer.usage.prompt_tokens == 4


def test_token_arrays_for_a_bedrock_embedding_model_are_refused_before_any_upstream_call(gw):
    upstream = gw.deploy("titan", provider="bedrock", model_name="titan-embed", model="amazon.titan-embed-text-v2:0")
    with gw.http() as http:
        response = http.post("/v1/embeddings", json={"model": "titan-embed", "input": [[1, 2, 3]]})
    assert response.status_code == 400
    assert gw.script(upstream).requests == []


def test_a_deployment_names_its_region_and_its_url_defaults_to_that_regions_endpoint(gw):
    gw.container.deployments.configure("acme", name="llama", provider="bedrock", model=LLAMA, price=PRICE,
                                       region="ap-southeast-2", api_key=BEDROCK_API_KEY)
    [shown] = gw.container.deployments.list("acme")
    assert shown["base_url"] == "https://bedrock-runtime.ap-southeast-2.amazonaws.com"
    assert shown["has_credentials"] is True and BEDROCK_API_KEY not in json.dumps(shown)


@pytest.mark.parametrize(("options", "refusal"), [
    ({"region": "", "api_key": BEDROCK_API_KEY}, "region: expected an AWS region"),
    ({"region": "Europe", "api_key": BEDROCK_API_KEY}, "region: expected an AWS region"),
    ({"region": "us-east-1", "api_key": None}, "api_key: expected a credential"),
    ({"region": "us-east-1", "api_key": "AKIA1234:short"}, "api_key: expected a Bedrock API key, or ACCESS_KEY_ID"),
])
def test_a_bedrock_deployment_without_a_region_or_a_usable_credential_is_refused(gw, options, refusal):
    with pytest.raises(InvalidDeployment, match=refusal) as refused:
        gw.container.deployments.configure("acme", name="llama", provider="bedrock", model=LLAMA, price=PRICE,
                                           **options)
    assert "short" not in str(refused.value)  # a credential is never echoed, even a malformed one
    assert gw.container.deployments.list("acme") == []
