"""Usage the provider never reported is counted with the model family's own tokenizer where one ships."""

from __future__ import annotations

import pytest

from adapters.providers.tokens import TokenCounter, tokenizer_for


@pytest.mark.parametrize(("provider", "model", "tokenizer"), [
    ("openai", "gpt-4o-mini", "o200k_base"),
    ("openai", "o3-mini", "o200k_base"),
    ("openai", "gpt-4-turbo", "cl100k_base"),
    ("deepseek", "deepseek-chat", "deepseek"),
    ("openai_compatible", "deepseek-ai/DeepSeek-R1", "deepseek"),
    ("anthropic", "claude-sonnet-4-5", "anthropic"),
    ("gemini", "gemini-2.5-flash", "cl100k_base"),
    ("llama", "meta-llama/Llama-3.3-70B-Instruct", "cl100k_base"),
    ("bedrock", "us.anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic"),
    ("bedrock", "deepseek.r1-v1:0", "deepseek"),
    ("bedrock", "meta.llama3-3-70b-instruct-v1:0", "cl100k_base"),
])
def test_each_model_family_gets_the_closest_offline_tokenizer(provider, model, tokenizer):
    assert tokenizer_for(provider, model) == tokenizer


def test_counts_come_from_the_bundled_vocabularies_without_a_download():
    counter = TokenCounter()
    text = "Hello from the fake upstream."
    for provider, model in [("openai", "gpt-4o"), ("deepseek", "deepseek-chat"), ("anthropic", "claude-3")]:
        assert counter.tokenizer(provider, model) == tokenizer_for(provider, model)
        assert 4 <= counter.count(provider, model, text) <= 10
    assert counter.count_chat("openai", "gpt-4o", ["Say hello", "again"]) == counter.count(
        "openai", "gpt-4o", "Say hello") + counter.count("openai", "gpt-4o", "again") + 3 * 2 + 3
