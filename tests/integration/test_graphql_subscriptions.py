"""Live events over websockets with the `gql` client: fed from NATS, scoped to the caller's tenant, and
resumable: a client that reconnects with fromPosition = last seen + 1 misses nothing and sees nothing twice."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from adapters.nats.connect import connect
from adapters.nats.relay import Relay, StreamNames
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture
from tests.integration.test_projections_support import completed

TRANSPORT_WS, LEGACY_WS = "graphql-transport-ws", "graphql-ws"
EVENTS = gql("""subscription($from: Int, $category: String) {
    events(filter: {fromPosition: $from, category: $category}) { position tenantId type category entryHash } }""")


class RelayThread:
    """The ledger-to-NATS relay, as `nexus up` runs it, on its own event loop."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.main(),), daemon=True)

    async def main(self) -> None:
        self.stop_event = asyncio.Event()
        nc = await connect(self.api.nats_url, "relay")
        settings = self.api.container.settings
        relay = Relay(self.api.container.ledger, nc.jetstream(), StreamNames(settings.nats_stream, settings.nats_subject_prefix))
        await relay.run(self.stop_event)
        await nc.close()

    def __enter__(self) -> RelayThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        while self.stop_event is None:
            pass
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=10)


@pytest.fixture
def relayed(api: Api) -> Iterator[Api]:
    api.ensure_stream()  # so a subscriber never races the relay's start
    with RelayThread(api):
        yield api


def transport(api: Api, token: str, protocol: str) -> WebsocketsTransport:
    return WebsocketsTransport(url=api.url.replace("http", "ws") + "/graphql", subprotocols=[protocol],
                               init_payload={"Authorization": f"Bearer {token}"})


async def take(api: Api, token: str, count: int, variables: dict, protocol: str = TRANSPORT_WS) -> list[dict]:
    got: list[dict] = []
    async with Client(transport=transport(api, token, protocol)) as session:
        async for result in session.subscribe(EVENTS, variable_values=variables):
            got.append(result["events"])
            if len(got) == count:
                break
    return got


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
def test_a_subscriber_resumes_after_a_disconnect_with_no_gap_and_no_duplicate(relayed, protocol):
    api = relayed
    token = api.keys["acme"]
    first = api.append(completed(tenant="acme"), completed(tenant="globex"), completed(tenant="acme"))
    before = asyncio.run(asyncio.wait_for(take(api, token, 2, {"from": 1, "category": "inference"}, protocol), 20))
    assert [e["position"] for e in before] == [first[0].position, first[2].position]

    # disconnected; meanwhile more is recorded, for both tenants
    later = api.append(completed(tenant="globex"), completed(tenant="acme"), completed(tenant="acme"))
    resumed = asyncio.run(asyncio.wait_for(
        take(api, token, 2, {"from": before[-1]["position"] + 1, "category": "inference"}, protocol), 20))

    positions = [e["position"] for e in before + resumed]
    assert positions == [first[0].position, first[2].position, later[1].position, later[2].position]
    assert {e["tenantId"] for e in before + resumed} == {"acme"}
    assert resumed[0]["entryHash"] == later[1].entry_hash.hex()


def test_new_events_arrive_live_and_another_tenant_sees_none_of_them(relayed):
    api = relayed

    async def scenario() -> tuple[list[dict], list[dict]]:
        after_head = {"from": api.size() + 1}
        acme = asyncio.create_task(take(api, api.keys["acme"], 1, after_head))
        globex = asyncio.create_task(take(api, api.keys["globex"], 1, after_head))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(api.append, completed(tenant="acme"))
        got = await asyncio.wait_for(acme, 20)
        done, _ = await asyncio.wait({globex}, timeout=1.0)
        globex.cancel()
        return got, [t.result() for t in done]

    got, other = asyncio.run(scenario())
    assert [e["tenantId"] for e in got] == ["acme"] and other == []


def test_a_subscription_without_credentials_is_refused(relayed):
    with pytest.raises(Exception, match="credentials|UNAUTHENTICATED|4403|Forbidden"):
        asyncio.run(asyncio.wait_for(take(relayed, "nx_wrong", 1, {"from": 1}), 10))
