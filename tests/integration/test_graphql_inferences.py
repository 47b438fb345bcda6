"""The inference log over GraphQL: a Relay connection with filters, one inference with its run graph, and
nested fields resolved by DataLoaders, so that a page costs the same number of SQL statements at 10
rows as at 100."""
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from domain.inference import InferenceRequested, inference_stream
from domain.ledger import NewEvent
from domain.pricing import Price
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture
from tests.integration.test_projections_support import completed, failed

PAGE = """query($n: Int!, $after: String, $filter: InferenceFilter) {
  inferences(first: $n, after: $after, filter: $filter) {
    edges { cursor node { id eventId position status model provider costMicros latencyMs ttftMs runId causationId
                          errorReason recordedAt } }
    pageInfo { hasNextPage endCursor } } }"""
NESTED = """query($n: Int!) { inferences(first: $n) { edges { node { id
    entry { position entryHash } deploymentInfo { name region } runGraph { runId nodes edges } } } } }"""


def inference(tenant: str, outcome: NewEvent, run: str, cause: str) -> list[NewEvent]:
    """The two events the gateway records for one request: InferenceRequested, then the outcome."""
    p = outcome.payload
    fact = InferenceRequested(p["request_id"], p["provider"], p["model"], p["deployment"], p["region"], "key", False)
    opened = NewEvent(inference_stream(p["request_id"]), fact.type, fact.payload(), tenant_id=tenant,
                      metadata={"correlation_id": run, "causation_id": cause})
    closed = NewEvent(outcome.stream_id, outcome.type, p, tenant_id=tenant,
                      metadata={"correlation_id": run, "causation_id": str(opened.event_id)})
    return [opened, closed]


def fill(api: Api, count: int, tenant: str = "acme", runs: int = 5) -> list[str]:
    """`count` inferences of `tenant`, spread over `runs` runs, one in ten failed; their ids, oldest first."""
    ids, events = [], []
    for i in range(count):
        rid = f"{tenant}-{i}-{uuid.uuid4().hex[:6]}"
        outcome = failed(rid, tenant=tenant) if i % 10 == 9 else completed(rid, tenant=tenant, model=f"m{i % 3}")
        events += inference(tenant, outcome, f"run-{tenant}-{i % runs}", f"cause-{i}")
        ids.append(rid)
    api.append(*events)
    return ids


def test_pages_follow_cursors_newest_first_and_filters_narrow_them(api):
    ids = fill(api, 30)
    fill(api, 5, tenant="globex")
    api.project()
    seen, after = [], None
    while True:
        page = api.data(PAGE, {"n": 12, "after": after})["inferences"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ids[::-1]

    def ids_of(**filter: Any) -> list[str]:
        return [e["node"]["id"] for e in api.data(PAGE, {"n": 100, "filter": filter})["inferences"]["edges"]]

    assert ids_of(status="FAILED") == [ids[29], ids[19], ids[9]]
    assert ids_of(model="m1", status="COMPLETED") == [i for n, i in enumerate(ids) if n % 3 == 1 and n % 10 != 9][::-1]
    assert ids_of(runId="run-acme-2") == [i for n, i in enumerate(ids) if n % 5 == 2][::-1]
    assert ids_of(runId="run-globex-2") == []
    now = dt.datetime.now(dt.UTC)
    assert ids_of(since=(now - dt.timedelta(minutes=5)).isoformat()) == ids[::-1]
    assert ids_of(until=(now - dt.timedelta(minutes=5)).isoformat()) == []


def test_a_row_holds_the_facts_of_its_events(api):
    [rid] = fill(api, 1)
    api.project()
    [edge] = api.data(PAGE, {"n": 1})["inferences"]["edges"]
    node = edge["node"]
    assert (node["id"], node["status"], node["model"], node["provider"]) == (rid, "COMPLETED", "m0", "openai")
    assert (node["costMicros"], node["latencyMs"], node["ttftMs"]) == (1_500, 200.0, 50.0)
    assert (node["runId"], node["causationId"], node["errorReason"]) == ("run-acme-0", "cause-0", None)


def test_one_inference_by_id_with_its_run_graph_and_none_of_another_tenant(api):
    ids = fill(api, 6, runs=2)
    [theirs] = fill(api, 1, tenant="globex")
    api.project()
    query = "query($id: ID!) { inference(id: $id) { id runId runGraph { runId status inferences nodes edges } } }"
    found = api.data(query, {"id": ids[2]})["inference"]
    graph = found["runGraph"]
    assert (graph["runId"], graph["inferences"]) == ("run-acme-0", 3)  # inferences 0, 2 and 4 of run 0
    kinds = {(n["type"], n.get("request_id")) for n in graph["nodes"]}
    assert ("InferenceCompleted", ids[2]) in kinds and ("InferenceRequested", ids[4]) in kinds
    assert len(graph["edges"]) == 3  # each request caused its outcome
    assert api.data(query, {"id": theirs})["inference"] is None


def test_first_is_capped_and_a_forged_cursor_is_a_typed_error(api):
    fill(api, 3)
    api.project()
    assert len(api.data(PAGE, {"n": 100_000})["inferences"]["edges"]) == 3
    body = api.gql(PAGE, {"n": 10, "after": "bm90LWEtY3Vyc29y"}).json()
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}
    assert api.gql(PAGE, {"n": 0}).json()["errors"][0]["extensions"]["field"] == "first"


# --- a constant number of SQL statements per page ---------------------------------------------------------


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQL statement any psycopg cursor in this process executes (the API server runs in-process),
    except the rate-limit spending exchange's NOTIFYs, which run on their own clock, not per request."""
    seen: list[str] = []
    lock = threading.Lock()
    for cls in (psycopg.Cursor, psycopg.AsyncCursor):
        for name in ("execute", "executemany"):
            original = getattr(cls, name)

            def counted(self: Any, query: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                if not str(query).startswith("SELECT pg_notify"):
                    with lock:
                        seen.append(str(query)[:200])
                return _original(self, query, *args, **kwargs)

            monkeypatch.setattr(cls, name, counted)
    yield seen


def test_a_page_of_100_with_nested_fields_costs_the_same_statements_as_a_page_of_10(api, statements):
    api.container.deployments.configure("acme", name="default", provider="openai", model="gpt-4o",
                                        model_name="gpt-4o", price=Price(1, 1, "USD", "v1"), region="eu-west")
    fill(api, 120, runs=7)
    api.project()
    api.data(NESTED, {"n": 10})  # warm: authentication and the routing cache

    def count(n: int) -> tuple[int, list[str]]:
        statements.clear()
        edges = api.data(NESTED, {"n": n})["inferences"]["edges"]
        assert len(edges) == n
        assert all(e["node"]["entry"] and e["node"]["deploymentInfo"]["region"] == "eu-west"
                   and e["node"]["runGraph"]["nodes"] for e in edges)
        return len(statements), list(statements)

    ten, at_ten = count(10)
    hundred, at_hundred = count(100)
    print(f"SQL statements: page of 10 -> {ten}, page of 100 -> {hundred}", *at_hundred, sep="\n")
    assert hundred == ten, (at_ten, at_hundred)
    assert ten <= 15, at_ten
