"""What idleness does to a durable commit: the floor under the gateway's overhead at 200 requests/s.

At 200 requests/s every process on a request's path idles about 5 ms between requests. This measures
the same statements after 0, 2 and 5 ms of idleness, against one PostgreSQL (the embedded PostgreSQL 18
unless --database-url). Variants run in blocks of 25 (each on its connection, which so idles as long as
asked between its uses), the blocks in random order so that a drift of the machine hits each alike.
Prints JSON: p50 / p90 in ms per variant and idleness.

- `select_1`: a round trip that writes nothing;
- `insert_2_rows_no_index`: BEGIN, two 1 KB rows into a table with a primary key only, COMMIT (durable);
- `insert_2_rows`: the same into a copy of `ledger.events` with all its indexes;
- `append_statements`: what a gateway append sends: the append lock, the two rows and a tree head;
- `ledger_append_async`: `PostgresLedger.append_async` of an InferenceRequested and InferenceCompleted
  pair, hashing and encoding included, on the event loop as the gateway calls it;
- `fdatasync_8k`: an 8 KB write and fdatasync on a file in the data directory's file system.

    .venv/bin/python ops/bench/idle_commit.py [--samples 500] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import uvloop
from psycopg.generators import execute
from psycopg.waiting import wait_async

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.postgres.ledger_store import PostgresLedger  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402
from ops.bench.scratch_database import scratch_database  # noqa: E402

IDLE_MS = (0, 2, 5)
BLOCK = 25  # operations of one variant in a row
PAYLOAD = {"model": "m", "text": "x" * 900, "tokens": 12}
PAYLOAD_SQL = "'" + json.dumps(PAYLOAD) + "'"
COLUMNS = ("(event_id, tenant_id, stream_id, type, schema_version, payload, metadata, position, stream_version,"
           " recorded_at, prev_hash, entry_hash, chain_hash)")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))] * 1000, 3)


class Statements:
    """Query strings shaped like the committer's, on scratch copies of the ledger's tables."""

    def __init__(self) -> None:
        self.position = 0

    def rows(self, table: str) -> str:
        stream = f"inference-{uuid.uuid4().hex}"
        values = []
        for version in (1, 2):
            self.position += 1
            digest = os.urandom(32).hex()
            values.append(f"('{uuid.uuid4()}','acme','{stream}','InferenceCompleted',1,{PAYLOAD_SQL},'{{}}',"
                          f"{self.position},{version},now(),decode('{digest}','hex'),decode('{digest}','hex'),"
                          f"decode('{digest}','hex'))")
        return f"INSERT INTO {table} {COLUMNS} VALUES {','.join(values)}"

    def head(self) -> str:
        digest = os.urandom(32).hex()
        return (f"INSERT INTO bench_heads (size, root, chain_head, frontier, committed_at) VALUES ({self.position},"
                f" decode('{digest}','hex'), decode('{digest}','hex'), decode('{digest}','hex'), now())")


async def run_query(conn: psycopg.AsyncConnection, query: str) -> None:
    """A simple-protocol query string, several statements at once, as the committer sends them."""
    pgconn = conn.pgconn
    pgconn.send_query(query.encode())
    for result in await wait_async(execute(pgconn), pgconn.socket, interval=0.1):
        if result.status not in (1, 2):  # COMMAND_OK, TUPLES_OK
            raise RuntimeError(result.error_message.decode())


async def measure(url: str, samples: int, sync_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute("CREATE TABLE bench_events (LIKE ledger.events INCLUDING ALL);"
                       " CREATE TABLE bench_lean (LIKE ledger.events INCLUDING DEFAULTS);"
                       " ALTER TABLE bench_lean ADD PRIMARY KEY (position);"
                       " CREATE TABLE bench_heads (LIKE ledger.heads INCLUDING ALL)")
    statements = Statements()
    ledger = PostgresLedger(url)
    fd = os.open(sync_dir / "fdatasync-probe", os.O_WRONLY | os.O_CREAT, 0o600)

    async def append() -> None:
        stream = f"inference-{uuid.uuid4().hex}"
        await ledger.append_async([NewEvent(stream, "InferenceRequested", PAYLOAD, tenant_id="acme"),
                                   NewEvent(stream, "InferenceCompleted", PAYLOAD, tenant_id="acme")], {stream: 0})

    async def fdatasync() -> None:
        os.pwrite(fd, b"x" * 8192, 0)
        os.fdatasync(fd)

    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "select_1": lambda: run_query(conn, "SELECT 1"),
        "insert_2_rows_no_index": lambda: run_query(conn, f"BEGIN; {statements.rows('bench_lean')}; COMMIT"),
        "insert_2_rows": lambda: run_query(conn, f"BEGIN; {statements.rows('bench_events')}; COMMIT"),
        "append_statements": lambda: run_query(
            conn, "BEGIN; SELECT 1 FROM ledger.append_lock FOR UPDATE; "
                  f"{statements.rows('bench_events')}; {statements.head()}; COMMIT"),
        "ledger_append_async": append,
        "fdatasync_8k": fdatasync,
    }
    report: dict[str, dict[str, dict[str, float]]] = {name: {} for name in variants}
    try:
        for idle_ms in IDLE_MS:
            latencies: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for _ in range(-(-samples // BLOCK)):
                random.shuffle(names)
                for name in names:  # a block each, so that each connection idles idle_ms between its uses
                    for i in range(BLOCK + 1):  # the first of a block wakes what the other blocks let sleep
                        started = time.perf_counter()
                        await variants[name]()
                        if i:
                            latencies[name].append(time.perf_counter() - started)
                        await asyncio.sleep(idle_ms / 1000)
            for name, values in latencies.items():
                report[name][f"idle_{idle_ms}ms"] = {"p50_ms": percentile(values, 0.5),
                                                     "p90_ms": percentile(values, 0.9)}
    finally:
        os.close(fd)
        ledger.close()
        await conn.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500, help="per variant and idleness")
    parser.add_argument("--database-url", help="an admin URL of another PostgreSQL (default: embedded PostgreSQL 18)")
    args = parser.parse_args()
    with scratch_database(args.database_url, "bench_idle") as database, \
            tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[2]) as sync_dir:
        started = time.time()
        report = uvloop.run(measure(database.admin_url, args.samples, Path(sync_dir)))  # the gateway's loop
    print(json.dumps({"benchmark": "durable commit after idleness", "samples": args.samples,
                      "server": "given" if args.database_url else "embedded PostgreSQL 18",
                      "took_s": round(time.time() - started, 1), "variants": report}, indent=1))


if __name__ == "__main__":
    main()
