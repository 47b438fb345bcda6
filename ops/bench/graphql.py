"""Benchmark the GraphQL read side; prints JSON: dashboard and inference-log query latencies at N ledger
events, and the live inference log's fan-out latency to many subscribers.

    .venv/bin/python ops/bench/graphql.py --events 1000000 [--tenants 50 --models 10 --samples 300]
    .venv/bin/python ops/bench/graphql.py --events 20000 --subscribers 100      # a quick run

1. Events are generated through the real PostgresLedger (group commit): each inference is its
   InferenceRequested and its outcome (one in 30 failed), as the gateway records them, spread over
   `--tenants` tenants and `--models` models. Then every deployed projection is rebuilt from the ledger
   (`store.rebuild`, as `nexus projections rebuild` does), which is also timed, then ANALYZE runs
   (autovacuum's job, done at once so the first query plans see the statistics).
2. Queries run in process through the whole GraphQL stack (strawberry schema, extensions, resolvers,
   the tenant-scoped data layer, PostgreSQL) as the owner of one tenant; HTTP is not included. Each is
   run `--samples` times after a warm-up:
   - dashboard: usageTimeseries(MINUTE, the last hour) with requests, cost, p50/p95/p99;
   - log first page: inferences(first: 50) with every scalar field;
   - log deep page: the same, after a cursor near the tenant's oldest inference;
   - log page of 100 with nested entry + deploymentInfo (DataLoaders);
   and the first three again straight through the data layer (`data_layer`: SQL and the tenant-scoped
   reader, no GraphQL), which shows where the time goes.
3. Fan-out (on a fresh small ledger of its own, so the stream holds only what it measures): the relay
   (ledger -> NATS) runs on a thread; `--subscribers` inferenceLog subscriptions of one tenant run in
   process (each its own NATS ordered consumer, as each websocket client would have); inferences are
   appended one at a time at `--rate` per second. Latency = delivery to a subscriber minus the moment
   the append returned (the commit was acknowledged; `append_to_delivery`: minus the moment it was
   called, the commit included). Websocket framing is not included.

Uses NEXUS_DATABASE_URL / NEXUS_NATS_URL if set, else a throwaway embedded PostgreSQL and nats-server.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# This file is called graphql.py: its own folder must not be on the path, or it would shadow graphql-core.
sys.path[0] = str(Path(__file__).resolve().parents[2])

import psycopg  # noqa: E402

from adapters.nats.connect import connect  # noqa: E402
from adapters.nats.relay import Relay, StreamNames, ensure_stream  # noqa: E402
from api.bootstrap import bootstrap  # noqa: E402
from api.graphql import services_for  # noqa: E402
from api.graphql.context import GraphContext  # noqa: E402
from api.graphql.schema import build_schema  # noqa: E402
from api.graphql.settings import GraphQLSettings  # noqa: E402
from api.settings import Settings  # noqa: E402
from application.graph_queries import TenantReader, cursor_of  # noqa: E402
from domain.inference import InferenceCompleted, InferenceFailed, InferenceRequested, inference_stream  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402
from domain.pricing import Price  # noqa: E402
from domain.rbac import actor_for_role  # noqa: E402
from ops.bench.stream import Servers  # noqa: E402
from projections import inference_log  # noqa: E402
from projections.registry import DEPLOYED  # noqa: E402

PROVIDERS = ["openai", "anthropic", "google", "mistral"]
TENANT = "tenant-0"  # the tenant whose dashboard and log are read: 1/tenants of the traffic
SCHEMA = build_schema(GraphQLSettings())

DASHBOARD = """query($s: DateTime!, $e: DateTime!) { usageTimeseries(granularity: MINUTE, start: $s, end: $e) {
    start requests errors costMicros tokensIn tokensOut p50Us p95Us p99Us } }"""
LOG_PAGE = """query($after: String) { inferences(first: 50, after: $after) {
    edges { cursor node { id eventId position status provider model deployment region tokensIn tokensOut
      tokensCached tokensReasoning costMicros currency priceVersion latencyMs ttftMs runId causationId
      errorReason recordedAt } }
    pageInfo { hasNextPage endCursor } } }"""
NESTED_PAGE = """{ inferences(first: 100) { edges { node { id costMicros
    entry { position entryHash } deploymentInfo { name region } } } } }"""


def inference(rng: random.Random, tenants: int, models: int, i: int, tenant: str | None = None) -> list[NewEvent]:
    """The gateway's two events for one inference (InferenceRequested, then its outcome)."""
    rid = f"b{i}-{uuid.uuid4().hex[:8]}"
    index = rng.randrange(models)
    model, provider = f"model-{index}", PROVIDERS[index % len(PROVIDERS)]
    tenant = tenant or f"tenant-{rng.randrange(tenants)}"
    latency = int(rng.lognormvariate(13, 0.8))  # median about 0.44 s
    requested = InferenceRequested(rid, provider, model, "default", "eu-west", "key", False)
    if rng.random() < 1 / 30:
        outcome: Any = InferenceFailed(rid, provider, model, "default", "eu-west", "timeout", "", latency)
    else:
        t_in, t_out = rng.randrange(10, 4000), rng.randrange(1, 1500)
        outcome = InferenceCompleted(rid, provider, model, "default", "eu-west", t_in, t_out, 0, 0, latency,
                                     latency // 5, t_in * 2 + t_out * 8, "USD", "2026-11")
    meta = {"correlation_id": rid, "causation_id": rid}
    opened = NewEvent(inference_stream(rid), requested.type, requested.payload(), tenant_id=tenant, metadata=meta)
    closed = NewEvent(inference_stream(rid), outcome.type, outcome.payload(), tenant_id=tenant,
                      metadata={"correlation_id": rid, "causation_id": str(opened.event_id)})
    return [opened, closed]


def chunks(n_events: int, tenants: int, models: int, size: int = 4096) -> Iterator[list[NewEvent]]:
    rng = random.Random(7)
    batch: list[NewEvent] = []
    for i in range(n_events // 2):
        batch += inference(rng, tenants, models, i)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
            "max_ms": round(ordered[-1], 2), "samples": len(ordered)}


async def timed(context: GraphContext, document: str, variables: dict[str, Any], samples: int) -> dict[str, float]:
    for _ in range(5):  # warm-up: connections, plans, caches
        await SCHEMA.execute(document, context_value=context, variable_values=variables)
    took = []
    for _ in range(samples):
        started = time.perf_counter()
        result = await SCHEMA.execute(document, context_value=context, variable_values=variables)
        took.append((time.perf_counter() - started) * 1000)
        assert not result.errors, result.errors
    return percentiles(took)


def timed_call(fn: Any, samples: int) -> dict[str, float]:
    for _ in range(5):
        fn()
    took = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        took.append((time.perf_counter() - started) * 1000)
    return percentiles(took)


def container_for(admin: str, servers: Servers, names: StreamNames) -> Any:
    return bootstrap(Settings(database_url=admin, nats_url=servers.nats_url, nats_stream=names.stream,
                              nats_subject_prefix=names.subject_prefix, data_dir=servers.folder / uuid.uuid4().hex[:6]))


def queries(servers: Servers, args: argparse.Namespace) -> dict[str, Any]:
    admin = servers.database()
    names = StreamNames(f"BENCH_{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}.nexus.events")
    container = container_for(admin, servers, names)
    services = services_for(container, GraphQLSettings())
    store = services.sources.projections
    try:
        started = time.perf_counter()
        pending = [container.ledger.submit(chunk) for chunk in chunks(args.events, args.tenants, args.models)]
        for future in pending:
            future.result()
        fill_s = time.perf_counter() - started
        container.identity.create_tenant(TENANT)
        container.deployments.configure(TENANT, name="default", provider="openai", model="model-0",
                                        model_name="model-0", price=Price(1, 1, "USD", "2026-11"), region="eu-west")
        rebuilds = {}
        for projection in DEPLOYED:
            result = store.rebuild(projection, container.ledger, batch=100_000)
            rebuilds[projection.name] = round(result.seconds, 1)
        with psycopg.connect(admin, autocommit=True) as conn:  # what autovacuum does within a minute or so
            conn.execute("ANALYZE")
        with store.reading("inference_log") as conn:
            rows = conn.execute(inference_log.log.select().with_only_columns(inference_log.log.c.position)
                                .where(inference_log.log.c.tenant_id == TENANT)
                                .order_by(inference_log.log.c.position).limit(200)).scalars().all()
        deep = cursor_of(rows[-1])  # a page of the tenant's ~150 oldest inferences

        async def run() -> dict[str, Any]:
            context = GraphContext(services)
            context.actor_override = actor_for_role(TENANT, "owner")
            now = dt.datetime.now(dt.UTC)
            span = {"s": (now - dt.timedelta(hours=1)).isoformat(), "e": now.isoformat()}
            return {
                "dashboard_timeseries": await timed(context, DASHBOARD, span, args.samples),
                "log_first_page": await timed(context, LOG_PAGE, {}, args.samples),
                "log_deep_page": await timed(context, LOG_PAGE, {"after": deep}, args.samples),
                "log_page_100_nested": await timed(context, NESTED_PAGE, {}, args.samples),
            }

        figures = asyncio.run(run())
        reader = TenantReader(actor_for_role(TENANT, "owner"), services.sources)
        now = dt.datetime.now(dt.UTC)
        figures["data_layer"] = {  # the same reads without GraphQL: PostgreSQL plus the tenant-scoped data layer
            "dashboard_timeseries": timed_call(lambda: reader.usage_timeseries(
                "minute", now - dt.timedelta(hours=1), now), args.samples),
            "log_first_page": timed_call(lambda: reader.inferences(50), args.samples),
            "log_deep_page": timed_call(lambda: reader.inferences(50, deep), args.samples),
        }
        return {"events": container.ledger.head().size, "tenant_share": round(1 / args.tenants, 4),
                "ledger_fill_s": round(fill_s, 1), "rebuild_s": rebuilds, "queries": figures}
    finally:
        store.close()
        container.close()


class RelayThread:
    def __init__(self, ledger: Any, nats_url: str, names: StreamNames) -> None:
        self.ledger, self.nats_url, self.names = ledger, nats_url, names
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.main(),), daemon=True)

    async def main(self) -> None:
        self.stop = asyncio.Event()
        nc = await connect(self.nats_url, "bench-relay")
        await ensure_stream(nc.jetstream(), self.names, self.ledger.genesis().ledger_id)
        self.ready.set()
        await Relay(self.ledger, nc.jetstream(), self.names).run(self.stop)
        await nc.close()

    def __enter__(self) -> RelayThread:
        self.thread.start()
        self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=20)


def fan_out(servers: Servers, args: argparse.Namespace) -> dict[str, Any]:
    admin = servers.database()
    names = StreamNames(f"BENCH_{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}.nexus.events")
    container = container_for(admin, servers, names)
    services = services_for(container, GraphQLSettings())
    committed: dict[str, tuple[float, float]] = {}  # inference id -> (append called, append returned)
    delivered: list[tuple[str, float]] = []
    missing = 0
    document = "subscription { inferenceLog { id } }"

    async def subscriber(ready: asyncio.Event, counter: list[int], count: int) -> int:
        context = GraphContext(services)
        context.actor_override = actor_for_role(TENANT, "owner")
        stream = await SCHEMA.subscribe(document, context_value=context)
        first = asyncio.ensure_future(stream.__anext__())  # starts the consumer (after the head as it is now)
        await asyncio.sleep(0.5)
        counter[0] += 1
        if counter[0] == args.subscribers:
            ready.set()
        seen = 0
        pending: asyncio.Future[Any] | None = first
        try:
            while pending is not None:
                result = await asyncio.wait_for(pending, 30)
                delivered.append((result.data["inferenceLog"]["id"], time.perf_counter()))
                seen += 1
                pending = asyncio.ensure_future(stream.__anext__()) if seen < count else None
        except TimeoutError:
            pending = None
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            await stream.aclose()
        return count - seen

    def append_all(ready: threading.Event) -> None:
        rng = random.Random(11)
        ready.wait(120)
        interval = 1 / args.rate
        for i in range(args.fan_out_inferences):
            events = inference(rng, 1, args.models, i, tenant=TENANT)
            rid = events[0].payload["request_id"]
            started = time.perf_counter()
            container.ledger.append(events)
            committed[rid] = (started, time.perf_counter())
            time.sleep(max(0.0, interval - (committed[rid][1] - started)))

    async def run() -> int:
        ready = asyncio.Event()
        counter = [0]
        tasks = [asyncio.create_task(subscriber(ready, counter, args.fan_out_inferences))
                 for _ in range(args.subscribers)]
        await ready.wait()
        go = threading.Event()
        appender = threading.Thread(target=append_all, args=(go,), daemon=True)
        appender.start()
        go.set()
        lost = sum(await asyncio.gather(*tasks))
        appender.join(timeout=60)
        return lost

    try:
        with RelayThread(container.ledger, servers.nats_url, names):
            missing = asyncio.run(run())
            asyncio.run(services.live.close())
    finally:
        services.sources.projections.close()
        container.close()
    after_return = [(arrived - committed[rid][1]) * 1000 for rid, arrived in delivered]
    after_call = [(arrived - committed[rid][0]) * 1000 for rid, arrived in delivered]
    return {"subscribers": args.subscribers, "inferences": args.fan_out_inferences, "rate_per_s": args.rate,
            "deliveries": len(delivered), "missing": missing,
            # from the append's return (the commit acknowledged; a delivery may even come first: < 0)
            "commit_to_delivery": percentiles(after_return) if delivered else None,
            # from the append's call (includes the commit itself)
            "append_to_delivery": percentiles(after_call) if delivered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--fan-out-inferences", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="inferences appended per second during fan-out")
    parser.add_argument("--skip", choices=["queries", "fan-out"], default=None)
    args = parser.parse_args()
    servers = Servers()
    try:
        out: dict[str, Any] = {"benchmark": "graphql"}
        if args.skip != "queries":
            out.update(queries(servers, args))
        if args.skip != "fan-out":
            out["fan_out"] = fan_out(servers, args)
        out["load_average_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(out))
    finally:
        servers.close()


if __name__ == "__main__":
    main()
