"""Live events over websockets with the `gql` client: fed from NATS, scoped to the caller's tenant, and
resumable: a client that reconnects with fromPosition = last seen + 1 misses nothing and sees nothing twice."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from gql import Client, GraphQLRequest, gql
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



INFERENCE_LOG = """subscription($filter: InferenceFilter) {
    inferenceLog(filter: $filter) { id status model costMicros runId causationId latencyMs } }"""
METRICS = """subscription($s: Int!) {
    metrics(bucketSeconds: $s) { bucketStart inferences errors p50Ms p99Ms costMicros tokensIn tokensOut } }"""


async def collect(api: Api, token: str, document: str, variables: dict, field: str, into: list[dict]) -> None:
    # A request of its own per subscriber: gql stores the variables on the request object it is given.
    request = GraphQLRequest(document, variable_values=variables)
    async with Client(transport=transport(api, token, TRANSPORT_WS)) as session:
        async for result in session.subscribe(request):
            into.append(result[field])


def probes(tenants: set[str]) -> list:
    """A completed and a failed inference per tenant: subscribers that see them are surely subscribed."""
    from tests.integration.test_projections_support import failed

    return [e for t in sorted(tenants) for e in (completed(f"probe-{uuid.uuid4().hex[:8]}", tenant=t, cost_micros=0,
                                                           tokens_in=0, tokens_out=0, latency_us=100_000),
                                                 failed(f"probe-{uuid.uuid4().hex[:8]}", tenant=t))]


def live(api: Api, subscribers: dict[str, tuple], batches: list[list], done: Callable[[dict], bool]) -> dict[str, list[dict]]:
    """Subscribe (token, document, variables, field) each, wait until each saw a probe (a subscription
    only sees what is recorded after it started), append the batches a little apart, and collect until
    `done(got)` or 20 s; returns what each received after its first probe."""
    got: dict[str, list[dict]] = {name: [] for name in subscribers}
    tenants = {"acme" if args[0] == api.keys["acme"] else "globex" for args in subscribers.values()}

    async def scenario() -> None:
        tasks = [asyncio.create_task(collect(api, *args, got[name])) for name, args in subscribers.items()]
        try:
            async with asyncio.timeout(20):
                while not all(got.values()):
                    await asyncio.to_thread(api.append, *probes(tenants))
                    await asyncio.sleep(0.5)
                for items in got.values():
                    del items[:1]
                for batch in batches:
                    await asyncio.to_thread(api.append, *batch)
                    await asyncio.sleep(0.2)
                while not done(got):
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
    return got


def not_probes(items: list[dict]) -> list[dict]:
    return [i for i in items if not i["id"].startswith("probe-")]


def test_the_live_inference_log_shows_the_callers_outcomes_as_the_log_would_filtered(relayed):
    from tests.integration.test_graphql_inferences import inference
    from tests.integration.test_projections_support import failed

    api = relayed
    acme, globex = api.keys["acme"], api.keys["globex"]
    ok = inference("acme", completed("ok-1", tenant="acme", cost_micros=42), "run-9", "subtask-3")
    bad = inference("acme", failed("bad-1", tenant="acme"), "run-9", "subtask-4")
    theirs = inference("globex", completed("theirs", tenant="globex"), "run-9", "x")
    subscribers = {"all": (acme, INFERENCE_LOG, {}, "inferenceLog"),
                   "failed": (acme, INFERENCE_LOG, {"filter": {"status": "FAILED"}}, "inferenceLog"),
                   "globex": (globex, INFERENCE_LOG, {}, "inferenceLog")}
    got = live(api, subscribers, [ok, bad, theirs],
               lambda got: [len(not_probes(got[n])) for n in subscribers] == [2, 1, 1])
    got = {name: not_probes(items) for name, items in got.items()}
    assert got["all"] == [
        {"id": "ok-1", "status": "COMPLETED", "model": "gpt-4o", "costMicros": 42, "runId": "run-9",
         "causationId": "subtask-3", "latencyMs": 200.0},
        {"id": "bad-1", "status": "FAILED", "model": "gpt-4o", "costMicros": 0, "runId": "run-9",
         "causationId": "subtask-4", "latencyMs": 30000.0}]
    assert [i["id"] for i in got["failed"]] == ["bad-1"]
    assert [i["id"] for i in got["globex"]] == ["theirs"]

    api.project()  # the read model says the same as the live log
    page = api.data("""{ inferences(first: 2, filter: {runId: "run-9"}) {
        edges { node { id status model costMicros runId causationId latencyMs } } } }""")["inferences"]["edges"]
    assert [e["node"] for e in page][::-1] == got["all"]


def test_live_metrics_bucket_the_callers_outcomes_at_most_once_a_second(relayed):
    from tests.integration.test_projections_support import failed

    api = relayed
    first = [completed(tenant="acme", latency_us=100_000, cost_micros=10, tokens_in=5, tokens_out=7),
             completed(tenant="globex", cost_micros=1_000_000)]
    second = [completed(tenant="acme", latency_us=300_000, cost_micros=20, tokens_in=5, tokens_out=7),
              failed(tenant="acme")]
    seen: list[float] = []

    def done(got: dict) -> bool:
        seen.append(len(got["m"]))
        return bool(got["m"]) and got["m"][-1]["costMicros"] == 30

    got = live(api, {"m": (api.keys["acme"], METRICS, {"s": 3600}, "metrics")}, [first, second], done)["m"]
    last = got[-1]
    assert (last["costMicros"], last["tokensIn"], last["tokensOut"]) == (30, 10, 14)  # probes cost nothing
    assert last["inferences"] - last["errors"] >= 3 and last["errors"] >= 2  # 2 ours + probes (a pair each)
    assert 250 <= last["p99Ms"] <= 300  # histogram buckets: within 19 % below the true 300 ms
    assert len(got) <= 2 + 1  # 1 s apart: the probes' bucket, then at most two more in the ~1.5 s of appends
