"""NEXUS runs over GraphQL: startNexusRun resolves the models, starts the run and says where its events
begin; nexusRun delivers the run's events (its own and its inferences') from NATS until it ends, to the
run's tenant only."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio

from gql import Client, GraphQLRequest

from domain.pricing import Price
from tests.fakes.harness import upstreams  # noqa: F401 - fixture
from tests.fakes.upstream import Upstreams
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture
from tests.integration.test_graphql_subscriptions import TRANSPORT_WS, RelayThread, transport

START = 'mutation($m: String) { startNexusRun(input: {task: "say hi", plannerModel: $m}) { runId fromPosition } }'
WATCH = "subscription($r: String!, $p: Int) { nexusRun(runId: $r, fromPosition: $p) { position type streamId payload } }"


async def watch(api: Api, token: str, run_id: str, from_position: int, seconds: float) -> list[dict]:
    got: list[dict] = []
    request = GraphQLRequest(WATCH, variable_values={"r": run_id, "p": from_position})

    async def read() -> None:
        async with Client(transport=transport(api, token, TRANSPORT_WS)) as session:
            async for result in session.subscribe(request):
                got.append(result["nexusRun"])

    try:
        await asyncio.wait_for(read(), seconds)
    except TimeoutError:
        pass
    return got


def test_a_started_run_is_watched_from_its_first_event_to_its_end_by_its_tenant_only(api, upstreams: Upstreams):
    api.container.deployments.configure("acme", name="chat", provider="openai", model="gpt-test", model_name="chat",
                                        base_url=upstreams.base("nexus-gql"), price=Price(1, 1, "USD", "v1"),
                                        api_key="sk-test")
    api.ensure_stream()
    with RelayThread(api):
        started = api.data(START, {"m": "chat"})["startNexusRun"]

        async def both() -> tuple[list[dict], list[dict]]:
            return await asyncio.gather(
                watch(api, api.keys["acme"], started["runId"], started["fromPosition"], 30),
                watch(api, api.keys["globex"], started["runId"], started["fromPosition"], 3))

        mine, theirs = asyncio.run(both())
    types = [e["type"] for e in mine]
    assert types[0] == "OrchestrationRequested" and types[-1] == "OrchestrationCompleted", types
    assert {"OrchestrationPlanned", "InferenceRequested", "InferenceCompleted"} <= set(types)
    assert [e["position"] for e in mine] == sorted(e["position"] for e in mine)
    assert theirs == []


def test_a_run_with_an_unknown_model_is_not_found_and_records_nothing(api):
    before = api.size()
    body = api.gql(START, {"m": "no-such-model"}).json()
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert api.size() == before
