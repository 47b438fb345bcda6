"""Counting tokens when a provider never reported usage (a stream cut before its usage chunk).

tiktoken's cl100k_base, read from the copy litellm ships (no download). Other providers tokenise
differently, so a counted usage is an estimate; events say `usage_source: "counted"` when it is one.
Without tiktoken, four characters make a token.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path


def token_counter() -> Callable[[str], int]:
    try:
        spec = importlib.util.find_spec("litellm")
        if spec is not None and spec.origin is not None:
            bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
            if bundled.is_dir():
                os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base")
    except Exception:  # no tiktoken or no bundled vocabulary: the rough rule below
        return lambda text: (len(text) + 3) // 4

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=())) if text else 0

    return count
