"""A loop must end when its task is cancelled, even if a library swallowed the CancelledError."""

from __future__ import annotations

import asyncio

from adapters.nats.cancellation import raise_if_cancelled


def test_a_loop_that_checks_ends_though_the_cancellation_was_swallowed_below_it():
    turns = 0

    async def loop_over_a_leaky_library() -> None:
        nonlocal turns
        while True:
            raise_if_cancelled()
            turns += 1
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass  # as asyncio.wait_for in Python 3.11 may do (CPython gh-86296)

    async def scenario() -> None:
        task = asyncio.create_task(loop_over_a_leaky_library())
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert task in done and task.cancelled()

    asyncio.run(scenario())
    assert turns >= 2


def test_a_task_nobody_cancelled_goes_on():
    async def scenario() -> None:
        raise_if_cancelled()  # nothing asked: no error

    asyncio.run(scenario())
