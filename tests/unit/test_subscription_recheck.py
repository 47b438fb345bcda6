"""A running subscription re-checks its caller's credential once an interval, never once an event, and ends
with UNAUTHENTICATED when it no longer stands (api/graphql/recheck.py). The integration tests do it over a
real websocket (tests/integration/test_graphql_subscription_credentials.py); here, the timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from api.graphql.errors import ClientError
from api.graphql.recheck import while_credential_stands


class Credential:
    """Stands until revoked; counts how often it was asked."""

    def __init__(self) -> None:
        self.standing, self.checks = True, 0

    async def still_stands(self) -> bool:
        self.checks += 1
        return self.standing


class Feed:
    """Events put by the test; remembers whether it was closed (its NATS consumer given back)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.closed = False

    async def events(self) -> AsyncIterator[int]:
        try:
            while True:
                yield await self.queue.get()
        finally:
            self.closed = True


def test_a_busy_feed_costs_no_check_per_event():
    async def scenario() -> tuple[list[int], int]:
        credential = Credential()

        async def burst() -> AsyncIterator[int]:
            for n in range(1000):
                yield n

        got = [n async for n in while_credential_stands(burst(), credential.still_stands, 60)]
        return got, credential.checks

    got, checks = asyncio.run(scenario())
    assert got == list(range(1000)) and checks == 0


def test_an_idle_subscription_ends_within_an_interval_of_the_revocation():
    async def scenario() -> tuple[ClientError, Feed, int]:
        credential, feed = Credential(), Feed()
        stream = while_credential_stands(feed.events(), credential.still_stands, 0.05)
        feed.queue.put_nowait(1)
        assert await anext(stream) == 1
        credential.standing = False
        with pytest.raises(ClientError) as ended:
            await asyncio.wait_for(anext(stream), 1)
        return ended.value, feed, credential.checks

    error, feed, checks = asyncio.run(scenario())
    assert error.extensions == {"code": "UNAUTHENTICATED"}
    assert feed.closed and checks == 1


def test_while_the_credential_stands_an_idle_subscription_is_checked_once_an_interval_and_goes_on():
    async def scenario() -> tuple[int, int]:
        credential, feed = Credential(), Feed()
        stream = while_credential_stands(feed.events(), credential.still_stands, 0.05)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.28)
        feed.queue.put_nowait(7)
        got = await asyncio.wait_for(waiting, 1)
        await stream.aclose()
        return got, credential.checks

    got, checks = asyncio.run(scenario())
    assert got == 7 and 4 <= checks <= 6


def test_a_consumer_away_longer_than_an_interval_gets_nothing_more_before_a_check():
    """The next event is already there when the slow consumer comes back: it is not delivered unchecked."""

    async def scenario() -> tuple[int, Feed]:
        credential, feed = Credential(), Feed()
        stream = while_credential_stands(feed.events(), credential.still_stands, 0.05)
        feed.queue.put_nowait(1)
        feed.queue.put_nowait(2)
        first = await anext(stream)
        credential.standing = False
        await asyncio.sleep(0.1)  # away (sending to a slow client, say)
        with pytest.raises(ClientError):
            await anext(stream)
        return first, feed

    first, feed = asyncio.run(scenario())
    assert first == 1 and feed.closed


def test_a_subscription_closed_by_its_client_gives_its_feed_back():
    async def scenario() -> Feed:
        feed = Feed()
        stream = while_credential_stands(feed.events(), Credential().still_stands, 60)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)
        waiting.cancel()  # how strawberry stops a subscription the client completed
        await asyncio.gather(waiting, return_exceptions=True)
        return feed

    assert asyncio.run(scenario()).closed
