"""The tail of a durable commit at the gateway's pace: what the disk puts under the overhead's p99.

At 200 requests/s the gateway makes one durable append every 5 ms. This makes the same appends
(`PostgresLedger.append_async` of an InferenceRequested and InferenceCompleted pair, on uvloop, as the
gateway calls it) every 5 ms with nothing else running; in turns with them, the same appends with
`synchronous_commit=off` (no WAL flush at commit: what is left is PostgreSQL's own work), and 8 KB
writes each followed by `fdatasync` on a file in the same file system, appended to as PostgreSQL
appends to its WAL (what is left is the disk's); and a fixed piece of pure Python work (3,000 steps of
a loop, no I/O, nothing shared): what is left is the machine's own, as when its vCPUs are slowed down.
Each variant runs in `--rounds` turns of `--seconds`, in turn (ABCD ABCD), so that a drift of the
machine hits each alike. Prints JSON: p50 / p90 / p99 / p99.9 / max in ms, how many took over four
times their median, and in how many separate stalls (slow operations less than 100 ms apart count as one).

    .venv/bin/python ops/bench/commit_tail.py [--seconds 15] [--rounds 2] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.postgres.ledger_store import PostgresLedger  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402
from ops.bench.scratch_database import scratch_database  # noqa: E402

PACE_S = 0.005
SLOW_X_MEDIAN = 4  # an operation this many times slower than the median is slow
STALL_GAP_S = 0.1
PAYLOAD = {"model": "m", "text": "x" * 900, "tokens": 12}
WAL_LIKE_FILE_BYTES = 16 << 20  # a WAL segment's size: then the file starts over, as a recycled segment


def summary(samples: list[tuple[float, float]]) -> dict[str, float | int]:
    """samples: (started at, seconds taken)."""
    ordered = sorted(taken for _, taken in samples)

    def q(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 3)

    median = ordered[len(ordered) // 2]
    slow = sorted(at for at, taken in samples if taken > SLOW_X_MEDIAN * median)
    stalls = sum(1 for i, at in enumerate(slow) if i == 0 or at - slow[i - 1] > STALL_GAP_S)
    return {"n": len(ordered), "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "p99_9_ms": q(0.999),
            "max_ms": round(ordered[-1] * 1000, 3), f"over_{SLOW_X_MEDIAN}x_p50": len(slow), "stalls": stalls}


async def paced(operation: Callable[[], Awaitable[None]], seconds: float, into: list[tuple[float, float]]) -> None:
    deadline = time.perf_counter() + seconds
    while (started := time.perf_counter()) < deadline:
        await operation()
        taken = time.perf_counter() - started
        into.append((started, taken))
        await asyncio.sleep(max(0.0, PACE_S - taken))


async def measure(url: str, seconds: float, rounds: int, sync_dir: Path) -> dict[str, dict[str, float | int]]:
    ledger = PostgresLedger(url)
    unflushed = PostgresLedger(make_conninfo(url, options="-c synchronous_commit=off"))
    fd = os.open(sync_dir / "wal-like", os.O_WRONLY | os.O_CREAT, 0o600)
    offset = 0

    async def append(into: PostgresLedger = ledger) -> None:
        stream = f"inference-{uuid.uuid4().hex}"
        await into.append_async([NewEvent(stream, "InferenceRequested", PAYLOAD, tenant_id="acme"),
                                 NewEvent(stream, "InferenceCompleted", PAYLOAD, tenant_id="acme")], {stream: 0})

    async def append_unflushed() -> None:
        await append(unflushed)

    async def fdatasync() -> None:
        nonlocal offset
        os.pwrite(fd, b"x" * 8192, offset)
        os.fdatasync(fd)
        offset = (offset + 8192) % WAL_LIKE_FILE_BYTES

    async def fixed_cpu_work() -> None:
        total = 0
        for i in range(3000):
            total += i * i

    variants = {"ledger_append_async": append, "ledger_append_async_synchronous_commit_off": append_unflushed,
                "fdatasync_8k_appended": fdatasync, "fixed_cpu_work": fixed_cpu_work}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    try:
        await append()  # connect and prepare before timing
        await append_unflushed()
        for _ in range(rounds):
            for name, operation in variants.items():
                await paced(operation, seconds, samples[name])
    finally:
        os.close(fd)
        ledger.close()
        unflushed.close()
    return {name: summary(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", help="an admin URL of another PostgreSQL (default: embedded PostgreSQL 18)")
    args = parser.parse_args()
    with scratch_database(args.database_url, "bench_tail") as database, \
            tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[2]) as sync_dir:
        started = time.time()
        report = uvloop.run(measure(database.admin_url, args.seconds, args.rounds, Path(sync_dir)))
    print(json.dumps({"benchmark": "durable commit tail at 200/s", "pace_ms": PACE_S * 1000,
                      "server": "given" if args.database_url else "embedded PostgreSQL 18",
                      "took_s": round(time.time() - started, 1), "variants": report}, indent=1))


if __name__ == "__main__":
    main()
