"""Counting tokens when a provider never reported usage (a stream cut before its usage chunk).

Each model family gets the closest tokenizer that ships offline: tiktoken's `o200k_base` for OpenAI's
GPT-4o, GPT-4.1, GPT-5 and o-series, `cl100k_base` for older OpenAI models, DeepSeek's own tokenizer
for DeepSeek models and litellm's bundled Anthropic tokenizer for Claude (the files litellm ships:
no download). Everyone else (Gemini, Mistral, Llama, local models) is counted with `cl100k_base`.
Chat prompts add OpenAI's framing: 3 tokens per message and 3 that prime the reply.

A count is always an estimate of what the provider bills (their framing, their tokenizer, tools):
the gateway records it with `usage_source: "counted"`, `usage_estimated: true` and the tokenizer's
name. Without tiktoken, four characters make a token (tokenizer `chars/4`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ROUGH = "chars/4"
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")
MESSAGE_FRAMING = 3  # tokens per chat message (role and separators), as OpenAI counts them
REPLY_PRIMING = 3


def tokenizer_for(provider: str, model: str) -> str:
    """The name of the tokenizer that counts this model's tokens best among those that ship offline."""
    m = model.lower().rsplit("/", 1)[-1]
    if provider == "deepseek" or "deepseek" in m:
        return "deepseek"
    if provider == "anthropic" or m.startswith("claude") or "anthropic.claude" in m:  # Bedrock: [us.]anthropic.claude-*
        return "anthropic"
    if provider == "openai" and m.startswith(_O200K_PREFIXES):
        return "o200k_base"
    return "cl100k_base"


class TokenCounter:
    """Tokenizers loaded on first use, each once; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Callable[[str], int]] = {}
        self._bundled: Path | None = None
        spec = importlib.util.find_spec("litellm")
        if spec is not None and spec.origin is not None:
            folder = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
            if folder.is_dir():
                self._bundled = folder
                os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(folder))

    def tokenizer(self, provider: str, model: str) -> str:
        """The tokenizer `count` uses for this model (ROUGH if none could be loaded)."""
        name = tokenizer_for(provider, model)
        return name if self._count_with(name) is not _rough else ROUGH

    def count(self, provider: str, model: str, text: str) -> int:
        return self._count_with(tokenizer_for(provider, model))(text) if text else 0

    def count_chat(self, provider: str, model: str, contents: list[str]) -> int:
        """A chat prompt: its messages' text plus OpenAI's framing."""
        count = self._count_with(tokenizer_for(provider, model))
        return sum(count(c) + MESSAGE_FRAMING for c in contents) + REPLY_PRIMING

    def _count_with(self, name: str) -> Callable[[str], int]:
        found = self._counts.get(name)
        if found is None:
            with self._lock:
                found = self._counts.get(name)
                if found is None:
                    found = self._counts[name] = self._load(name)
        return found

    def _load(self, name: str) -> Callable[[str], int]:
        try:
            if name in ("deepseek", "anthropic"):
                if self._bundled is None:
                    return self._count_with("cl100k_base")
                from tokenizers import Tokenizer

                hf = Tokenizer.from_file(str(self._bundled / f"{name}_tokenizer.json"))
                return lambda text: len(hf.encode(text, add_special_tokens=False).ids)
            import tiktoken

            encoding = tiktoken.get_encoding(name)
            return lambda text: len(encoding.encode(text, disallowed_special=()))
        except Exception:  # no tiktoken, or no bundled vocabulary: the rough rule
            log.warning("tokenizer %s is not available; counting four characters as a token", name)
            return _rough


def _rough(text: str) -> int:
    return (len(text) + 3) // 4


def token_counter() -> TokenCounter:
    return TokenCounter()
