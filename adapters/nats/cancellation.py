"""Ending a loop that was cancelled, even when a library swallowed the cancellation on its way."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """CancelledError if someone asked the current task to stop, whether or not it saw the request.

    In Python 3.11 `asyncio.wait_for` can return a result and drop a cancellation that arrived as its
    inner future completed (CPython gh-86296, fixed in 3.12), and nats-py calls `wait_for` on every
    request and fetch. A loop that relies on the CancelledError alone then runs on after `cancel()`:
    seen here as a test that failed and then hung while asyncio.run cancelled the relay and a consumer.
    The request is still counted (`Task.cancelling()`), so the loops look for it at every turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
