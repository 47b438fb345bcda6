"""The official openai SDK, pointed at NexusAI with a NexusAI key, works unchanged; every call is recorded."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import json

import orjson
import pytest

from domain.deployments import InvalidDeployment
from domain.pricing import cost_micros
from tests.fakes.harness import PRICE, gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import JSON_REPLY, REPLY, TOOL_ARGUMENTS

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]  # five prompt tokens at the fake


def test_a_chat_completion_through_the_sdk_is_answered_recorded_and_receipted(gw):
    upstream = gw.deploy("primary")
    raw = gw.client().chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO)
    completion = raw.parse()

    assert completion.choices[0].message.content == REPLY
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 5)
    receipt = dict(part.strip().split("=", 1) for part in raw.headers["nexus-receipt"].split(";"))
    requested, completed = gw.events("InferenceRequested", "InferenceCompleted")
    assert (int(receipt["position"]), receipt["event_id"], receipt["entry_hash"]) == (
        completed.position, str(completed.event_id), completed.entry_hash.hex())
    assert requested.stream_id == completed.stream_id == f"inference-{raw.headers['x-request-id']}"
    assert requested.tenant_id == completed.tenant_id == "acme"
    p = orjson.loads(completed.payload)
    assert (p["provider"], p["deployment"], p["tokens_in"], p["tokens_out"]) == ("openai", "primary", 5, 5)
    assert p["cost_micros"] == cost_micros(PRICE, 5, 5) == (5 * 2_500_000 + 5 * 10_000_000) // 1_000_000
    assert (p["currency"], p["price_table_version"], p["usage_source"]) == ("USD", "test-2026-11", "provider")
    assert p["attempts"] == [{**p["attempts"][0], "attempt": 1, "deployment": "primary", "outcome": "ok"}]
    meta = orjson.loads(completed.metadata)
    assert meta["correlation_id"] == raw.headers["x-request-id"] and meta["causation_id"] == str(requested.event_id)
    sent = gw.script(upstream).requests[0]
    assert sent["body"]["model"] == "openai-model-primary" and sent["headers"]["authorization"] == "Bearer sk-upstream-secret"


def test_a_streamed_completion_with_usage_through_the_sdk(gw):
    gw.deploy("primary")
    stream = gw.client().chat.completions.create(model="gpt-test", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True})
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 5)
    [completed] = gw.events("InferenceCompleted")
    assert chunks[-1].model_extra["nexus_receipt"] == {
        "position": completed.position, "event_id": str(completed.event_id), "entry_hash": completed.entry_hash.hex()}
    p = orjson.loads(completed.payload)
    assert (p["tokens_in"], p["tokens_out"], p["finish"], p["usage_source"]) == (5, 5, "complete", "provider")
    assert p["ttft_us"] is not None and 0 < p["ttft_us"] <= p["latency_us"]


def test_a_raw_stream_announces_its_receipt_up_front_and_delivers_it_after_done(gw):
    gw.deploy("primary")
    with gw.http() as http, http.stream("POST", "/v1/chat/completions",
                                        json={"model": "gpt-test", "messages": HELLO, "stream": True}) as response:
        pending = response.headers["nexus-receipt"]
        body = response.read().decode()
    [completed] = gw.events("InferenceCompleted")
    assert pending.startswith("status=pending; event_id=" + str(completed.event_id))
    frames = body.strip().split("\n\n")
    assert frames[-2] == "data: [DONE]"
    event, data = frames[-1].split("\n")
    assert event == "event: nexus.receipt"
    assert json.loads(data.removeprefix("data: "))["position"] == completed.position
    assert all('"usage":{' not in f for f in frames[:-2])  # not asked for: the usage chunk is not relayed


def test_tools_are_passed_through_and_tool_calls_come_back(gw):
    upstream = gw.deploy("primary")
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}}]
    completion = gw.client().chat.completions.create(model="gpt-test", messages=HELLO, tools=tools,
                                                     tool_choice="auto")
    call = completion.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", TOOL_ARGUMENTS)
    sent = gw.script(upstream).requests[0]["body"]
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"

    stream = gw.client().chat.completions.create(model="gpt-test", messages=HELLO, tools=tools, stream=True)
    arguments = "".join(tc.function.arguments or "" for c in stream if c.choices for tc in c.choices[0].delta.tool_calls or [])
    assert json.loads(arguments) == TOOL_ARGUMENTS


def test_json_mode_and_structured_output_are_passed_through(gw):
    upstream = gw.deploy("primary")
    client = gw.client()
    answer = client.chat.completions.create(model="gpt-test", messages=HELLO, response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content) == json.loads(JSON_REPLY)
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
        "additionalProperties": False}}}
    client.chat.completions.create(model="gpt-test", messages=HELLO, response_format=schema)
    sent = [r["body"]["response_format"] for r in gw.script(upstream).requests]
    assert sent == [{"type": "json_object"}, schema]


def test_embeddings_through_the_sdk(gw):
    gw.deploy("embedder", model_name="embed-test")
    result = gw.client().embeddings.create(model="embed-test", input=["one two three", "four"])
    assert [len(d.embedding) for d in result.data] == [4, 4]
    assert result.data[0].embedding[0] == len("one two three")  # the SDK's base64 default decoded
    [p] = gw.payloads("InferenceCompleted")
    assert (p["kind"], p["tokens_in"], p["tokens_out"], p["cost_micros"]) == ("embeddings", 4, 0, 10)


def test_models_lists_the_tenants_model_names(gw):
    gw.deploy("a", model_name="gpt-test")
    gw.deploy("b", model_name="gpt-test", priority=1)
    gw.deploy("c", model_name="claude-test", provider="anthropic")
    models = gw.client().models.list()
    assert [(m.id, m.owned_by) for m in models.data] == [("claude-test", "anthropic"), ("gpt-test", "openai")]
    assert gw.client().models.retrieve("gpt-test").id == "gpt-test"


def test_anthropic_messages_through_litellm(gw):
    upstream = gw.deploy("claude", provider="anthropic", model_name="claude-test", model="claude-fake-1")
    client = gw.client()
    answer = client.chat.completions.create(model="claude-test", messages=HELLO, max_tokens=64)
    assert answer.choices[0].message.content == REPLY
    chunks = list(client.chat.completions.create(model="claude-test", messages=HELLO, max_tokens=64, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.completion_tokens == 5
    assert [r["path"] for r in gw.script(upstream).requests] == [f"/u/{upstream}/v1/messages"] * 2
    assert gw.script(upstream).requests[0]["headers"]["x-api-key"] == "sk-upstream-secret"
    recorded = gw.payloads("InferenceCompleted")
    assert [(p["provider"], p["model"], p["tokens_in"], p["tokens_out"]) for p in recorded] == [
        ("anthropic", "claude-fake-1", 5, 5)] * 2


def test_gemini_through_litellm(gw):
    upstream = gw.deploy("gem", provider="gemini", model_name="gemini-test", model="gemini-fake-1")
    client = gw.client()
    assert client.chat.completions.create(model="gemini-test", messages=HELLO).choices[0].message.content == REPLY
    chunks = list(client.chat.completions.create(model="gemini-test", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    paths = [r["path"].rsplit(":", 1)[1] for r in gw.script(upstream).requests]
    assert paths == ["generateContent", "streamGenerateContent"]
    recorded = gw.payloads("InferenceCompleted")
    assert [(p["provider"], p["tokens_in"], p["tokens_out"]) for p in recorded] == [("gemini", 5, 5)] * 2


def test_gemini_embeddings_through_litellm_are_answered_in_openais_shape_and_counted_as_an_estimate(gw):
    upstream = gw.deploy("gem-embed", provider="gemini", model_name="gemini-embed", model="text-embedding-fake")
    client = gw.client()
    encoded = client.embeddings.create(model="gemini-embed", input=["one two three", "four"])  # SDK default: base64
    plain = client.embeddings.create(model="gemini-embed", input="five six", encoding_format="float", dimensions=3)

    assert [d.embedding for d in encoded.data] == [[13.0, 0.5, -0.25, 0.0], [4.0, 0.5, -0.25, 1.0]]
    assert [d.embedding for d in plain.data] == [[8.0, 0.5, -0.25]]
    sent = gw.script(upstream).requests
    assert [r["path"].rsplit(":", 1)[1] for r in sent] == ["batchEmbedContents"] * 2
    assert [r["content"]["parts"][0]["text"] for r in sent[0]["body"]["requests"]] == ["one two three", "four"]
    assert sent[1]["body"]["requests"][0]["outputDimensionality"] == 3
    assert sent[0]["headers"]["x-goog-api-key"] == "sk-upstream-secret"
    recorded = gw.payloads("InferenceCompleted")
    assert [(p["kind"], p["provider"], p["tokens_out"], p["usage_estimated"]) for p in recorded] == [
        ("embeddings", "gemini", 0, True)] * 2
    assert [p["tokens_in"] for p in recorded] == [encoded.usage.prompt_tokens, plain.usage.prompt_tokens]
    assert all(p["tokens_in"] > 0 for p in recorded)


def test_a_model_served_only_by_anthropic_refuses_embeddings_before_any_upstream_call(gw):
    upstream = gw.deploy("claude", provider="anthropic", model_name="claude-test", model="claude-fake-1")
    with gw.http() as http:
        response = http.post("/v1/embeddings", json={"model": "claude-test", "input": "hello"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "embeddings_not_supported"
    assert gw.script(upstream).requests == [] and gw.events("InferenceRequested") == []


def test_azure_openai_is_called_under_its_deployments_path_with_its_api_version_and_api_key_header(gw):
    upstream = gw.deploy("azure-eu", provider="azure", model_name="gpt-azure", model="gpt-4o", region="westeurope")
    client = gw.client()
    assert client.chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY
    chunks = list(client.chat.completions.create(model="gpt-azure", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 5
    gw.deploy("azure-embed", provider="azure", model_name="embed-azure", upstream=upstream, region="westeurope")
    assert len(client.embeddings.create(model="embed-azure", input="one two").data[0].embedding) == 4

    sent = gw.script(upstream).requests
    assert [r["path"].split("/gpt-4o-eu/")[1] for r in sent] == ["chat/completions", "chat/completions", "embeddings"]
    assert {r["query"] for r in sent} == {"api-version=2024-10-21"}
    assert {r["headers"].get("api-key") for r in sent} == {"sk-upstream-secret"}
    assert not any("authorization" in r["headers"] for r in sent)
    recorded = gw.payloads("InferenceCompleted")
    assert [(p["provider"], p["region"], p["usage_source"]) for p in recorded] == [("azure", "westeurope", "provider")] * 3


def test_an_azure_deployment_without_an_api_version_is_refused(gw):
    with pytest.raises(InvalidDeployment, match=r"\?api-version="):
        gw.container.deployments.configure("acme", name="az", provider="azure", model="gpt-4o", price=PRICE,
                                           base_url="https://acme.openai.azure.com/openai/deployments/gpt-4o")
