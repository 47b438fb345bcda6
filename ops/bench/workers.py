"""Benchmark: what `nexus up`'s background workers cost, idle and under a gateway's stream of events. Prints JSON.

    .venv/bin/python ops/bench/workers.py [--rate 400] [--seconds 20] [--idle-seconds 10] [--linger-ms 50,150]
                                          [--consumers separate,grouped] [--output run.json]

For each way of running the projection consumers (`NEXUS_PROJECTION_CONSUMERS`), on a fresh embedded
PostgreSQL and NATS:

1. the worker process is started as `nexus up` starts it (`api.worker_process`: the relay, the
   projection consumers and the sweeper), and waited for until every projection follows the stream;
2. idle: nothing is appended for `--idle-seconds`; the CPU of the worker process, of PostgreSQL (all
   its processes) and of nats-server is read from /proc;
3. load: an open-loop generator in this process appends what the gateway appends per request, an
   InferenceRequested and an InferenceCompleted in one append, at `--rate` events/s (400 events/s is
   a gateway at 200 req/s) for `--seconds`; the same CPU figures, and the lag from each append's
   return to the moment every projection's checkpoint covers it (checkpoints sampled every 5 ms).

PostgreSQL's CPU includes the generator's own ledger commits, the same in every mode.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[0] = str(ROOT)  # not ops/bench: its graphql.py would shadow the graphql package

import psycopg  # noqa: E402

from adapters.embedded import stop_embedded_postgres  # noqa: E402
from api.bootstrap import bootstrap, nats_url_for  # noqa: E402
from api.settings import Settings  # noqa: E402
from domain.inference import InferenceCompleted, InferenceRequested, inference_stream  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


class CpuMeter:
    """CPU seconds of named groups of processes; PostgreSQL's backends come and go, so they are re-listed."""

    def __init__(self, worker: int, postmaster: int, nats: int | None) -> None:
        self._worker, self._postmaster, self._nats = worker, postmaster, nats
        self._seen: dict[int, float] = {}

    def snapshot(self) -> dict[str, float]:
        postgres = [self._postmaster, *children(self._postmaster)]
        # A backend that exited since the last snapshot took its CPU with it: keep its last reading.
        for pid in postgres:
            self._seen[pid] = cpu_seconds(pid)
        return {"worker_process": cpu_seconds(self._worker), "postgresql": sum(self._seen.values()),
                "nats_server": cpu_seconds(self._nats) if self._nats else 0.0}


def per_second(before: dict[str, float], after: dict[str, float], elapsed: float) -> dict[str, float]:
    return {f"{name}_cpu_ms_per_s": round((after[name] - before[name]) * 1000 / elapsed, 1) for name in before}


def pair(i: int) -> list[NewEvent]:
    rid = f"r{i}-{uuid.uuid4().hex[:8]}"
    tenant = f"tenant-{i % 3}"
    model = f"model-{i % 4}"
    requested = InferenceRequested(rid, "openai", model, "fast", "eu-west", "key-1", False)
    completed = InferenceCompleted(rid, "openai", model, "fast", "eu-west", 120, 80, 0, 0, 1_500, 40_000, 900,
                                   "USD", "2026-11")
    stream = inference_stream(rid)
    return [NewEvent(stream, requested.type, requested.payload(), tenant_id=tenant),
            NewEvent(stream, completed.type, completed.payload(), tenant_id=tenant)]


def checkpoints_sql(conn: psycopg.Connection) -> str:
    schemas = [r[0] for r in conn.execute("SELECT active_schema FROM projections.registry ORDER BY name")]
    return "SELECT LEAST(" + ", ".join(f'(SELECT position FROM "{s}"._checkpoint)' for s in schemas) + ")"


def wait_until_following(url: str, head: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            registered = conn.execute("SELECT count(*) FROM projections.registry").fetchone()
            if registered and registered[0] >= 4:
                least = conn.execute(checkpoints_sql(conn)).fetchone()
                if least and least[0] is not None and least[0] >= head:
                    return
            time.sleep(0.1)
    raise TimeoutError("the projections did not catch up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_mode(mode: str, args: argparse.Namespace, linger_ms: str = "") -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="nexus-bench-workers-"))
    settings = Settings(data_dir=data_dir, local_model=False)
    container = bootstrap(settings)
    nats_url = nats_url_for(container)
    ledger = container.ledger
    # Something in the ledger before the workers start, so that "following" has a head to reach.
    head = ledger.append(pair(0))[-1].position
    os.environ["NEXUS_PROJECTION_CONSUMERS"] = mode
    if linger_ms:
        os.environ["NEXUS_PROJECTION_LINGER_MS"] = linger_ms
    else:
        os.environ.pop("NEXUS_PROJECTION_LINGER_MS", None)
    from api.worker_process import spawn

    worker = spawn(settings, database_url=container.database.admin_url, app_database_url=container.database.app_url,
                   nats_url=nats_url)
    app_url = container.database.app_url
    try:
        wait_until_following(app_url, head)
        postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        nats_pid = container.nats_process.pid if container.nats_process else None
        meter = CpuMeter(worker.pid, postmaster, nats_pid)

        time.sleep(1.0)
        before, started = meter.snapshot(), time.monotonic()
        time.sleep(args.idle_seconds)
        idle = per_second(before, meter.snapshot(), time.monotonic() - started)

        appended: list[tuple[int, float]] = []  # (last position of the append, when it returned)
        samples: list[tuple[float, int]] = []  # (when, least checkpoint)
        sampling = threading.Event()

        def sample() -> None:
            with psycopg.connect(app_url, autocommit=True) as conn:
                query = checkpoints_sql(conn)
                while not sampling.is_set():
                    least = conn.execute(query).fetchone()
                    samples.append((time.monotonic(), least[0] if least and least[0] is not None else 0))
                    time.sleep(0.005)

        async def generate() -> None:
            loop = asyncio.get_running_loop()
            pairs_per_s = args.rate / 2
            total = int(pairs_per_s * args.seconds)
            start = loop.time() + 0.05
            pending: set[asyncio.Task[None]] = set()

            async def send(i: int) -> None:
                receipts = await ledger.append_async(pair(i))
                appended.append((receipts[-1].position, time.monotonic()))

            for i in range(1, total + 1):
                due = start + i / pairs_per_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = loop.create_task(send(i))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        before, started = meter.snapshot(), time.monotonic()
        asyncio.run(generate())
        load = per_second(before, meter.snapshot(), time.monotonic() - started)
        last = max(p for p, _ in appended)
        drain_deadline = time.monotonic() + 60
        while (not samples or samples[-1][1] < last) and time.monotonic() < drain_deadline:
            time.sleep(0.01)
        sampling.set()
        sampler.join()
        times = [t for t, _ in samples]
        lags = []
        for position, at in appended:
            i = bisect.bisect_left(times, at)
            while i < len(samples) and samples[i][1] < position:
                i += 1
            if i < len(samples):
                lags.append(samples[i][0] - at)
        return {
            "consumers": mode,
            "linger_ms": float(linger_ms) if linger_ms else Settings().projection_linger_ms,
            "idle": idle,
            "load": {
                "offered_events_per_s": args.rate,
                "achieved_events_per_s": round(2 * len(appended) / args.seconds, 1),
                **load,
                "worker_cpu_ms_per_event": round(load["worker_process_cpu_ms_per_s"] / args.rate, 3),
                "postgresql_cpu_ms_per_event": round(load["postgresql_cpu_ms_per_s"] / args.rate, 3),
                "lag_p50_ms": round(percentile(lags, 0.5) * 1000, 1) if lags else None,
                "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1) if lags else None,
                "appends_not_projected": len(appended) - len(lags),
            },
        }
    finally:
        from api.child_processes import stop

        stop([worker])
        container.close()
        stop_embedded_postgres(data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=400.0, help="events/s (two per gateway request)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--consumers", default="separate,grouped", help="comma-separated NEXUS_PROJECTION_CONSUMERS")
    parser.add_argument("--linger-ms", default="", help="comma-separated NEXUS_PROJECTION_LINGER_MS to compare (default: the setting's)")
    parser.add_argument("--output")
    args = parser.parse_args()
    result = {"benchmark": "background workers of nexus up", "load_average": os.getloadavg(),
              "modes": [run_mode(mode, args, linger) for mode in args.consumers.split(",")
                        for linger in (args.linger_ms.split(",") if args.linger_ms else [""])]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
