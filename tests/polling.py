"""Waiting in tests for something another thread or process makes true."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], what: str, within_s: float = 5.0) -> float:
    """Seconds until `condition` held; AssertionError naming `what` if it did not within `within_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s} s: {what}")
        time.sleep(0.002)
    return time.monotonic() - started
