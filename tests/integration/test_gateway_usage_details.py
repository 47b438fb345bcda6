"""Cached and reasoning tokens, as each provider reports them on its own wire, recorded in OpenAI's terms.

The recorded `tokens_in` is the whole prompt, cached tokens included; `tokens_out` the whole completion,
reasoning included (OpenAI's definitions); the cost charges cached tokens at the cached-input price. The
providers disagree: Anthropic's `input_tokens` leave the cache reads out, Gemini counts thoughts apart
from the candidates, DeepSeek names its cache hits `prompt_cache_hit_tokens`, and Bedrock's `inputTokens`
leave its `cacheReadInputTokens` out.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import pytest

from domain.pricing import Price, cost_micros
from tests.fakes.harness import gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import REPLY, cache_and_reasoning

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]  # five prompt tokens at the fake
VISIBLE = len(REPLY.split())  # the reply's own tokens at the fake
PRICE = Price(input=2_500_000, output=10_000_000, currency="USD", version="cache-test", cached_input=1_250_000)

# provider, the fake's behaviour, what is recorded: (in, out, cached, reasoning)
CASES = [
    ("openai", cache_and_reasoning(3, 4), (5, VISIBLE + 4, 3, 4)),
    ("deepseek", cache_and_reasoning(3, 4, deepseek=True), (5, VISIBLE + 4, 3, 4)),
    ("anthropic", cache_and_reasoning(3, 0), (5, VISIBLE, 3, 0)),
    ("gemini", cache_and_reasoning(3, 4), (5, VISIBLE + 4, 3, 4)),
    ("bedrock", cache_and_reasoning(3, 0), (5, VISIBLE, 3, 0)),
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(("provider", "behaviour", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cached_and_reasoning_tokens_are_recorded_and_priced_whatever_the_providers_wire(
        gw, provider, behaviour, expected, stream):
    upstream = gw.deploy("d", provider=provider, model_name="m", price=PRICE)
    gw.script(upstream).default = behaviour
    client = gw.client()
    if stream:
        chunks = list(client.chat.completions.create(model="m", messages=HELLO, max_tokens=64, stream=True,
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    else:
        assert client.chat.completions.create(model="m", messages=HELLO, max_tokens=64).choices[0].message.content == REPLY
    [p] = gw.payloads("InferenceCompleted")
    assert (p["tokens_in"], p["tokens_out"], p["tokens_cached"], p["tokens_reasoning"]) == expected
    assert p["usage_source"] == "provider"
    assert p["cost_micros"] == cost_micros(PRICE, expected[0], expected[1], expected[2])
