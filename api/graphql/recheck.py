"""A running subscription ends when its caller's credential does.

GraphQL's context authenticates a websocket once; the gate in api/ratelimit.py re-checks every operation
started on it, but a subscription already streaming would otherwise deliver until the client closes it.
So each subscription asks again, once an interval (not once an event: one database read per interval per
subscription, however busy the feed): while it waits for the next event (so an idle one ends within an
interval too), and before it delivers one after being away longer than that (a slow client, a blocked
loop). When the credential no longer stands it ends with UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar, cast

from api.graphql.errors import unauthenticated

T = TypeVar("T")

ENDED = "signed-out, deactivated or revoked credentials: this subscription has ended; subscribe again after signing in"


async def while_credential_stands(items: AsyncIterator[T], still_stands: Callable[[], Awaitable[bool]],
                                  interval_s: float) -> AsyncIterator[T]:
    """`items`, until `still_stands()` answers False at one of its checks (then UNAUTHENTICATED). The first
    check is one interval after the start: the subscription was authenticated (or re-checked) just now."""
    loop = asyncio.get_running_loop()
    checked = loop.time()
    pending: asyncio.Future[T | object] | None = None
    try:
        while True:
            if pending is None:
                # the wait for the next item outlives a check: cancelling it would end the feed
                pending = asyncio.ensure_future(_next(items))
            left = checked + interval_s - loop.time()
            if left > 0:
                await asyncio.wait({pending}, timeout=left)
            if loop.time() - checked >= interval_s:
                if not await still_stands():
                    raise unauthenticated(ENDED)
                checked = loop.time()
            if pending.done():
                done, pending = pending, None
                item = done.result()
                if item is _END:
                    return
                yield cast(T, item)
    finally:
        if pending is not None:
            pending.cancel()  # the feed's own cleanup runs (e.g. its NATS consumer is unsubscribed)
            await asyncio.wait({pending})
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()


_END = object()


async def _next(items: AsyncIterator[T]) -> T | object:
    # StopAsyncIteration does not belong in a task's result: the end of the feed is a value here
    return await anext(items, _END)
