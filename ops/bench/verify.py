"""How fast `nexus ledger verify` walks a ledger: fill one with N 1 KB events, verify it, print JSON.

    .venv/bin/python ops/bench/verify.py [--entries 200000] [--workers 2] [--repeat 3] [--database-url URL]

Without --database-url an embedded PostgreSQL is started in a temporary directory. The ledger is
filled through the real append path (group commit), then verified exactly as the command line does
(one snapshot, `--workers` processes); the best of `--repeat` runs is reported, as other load on the
machine only ever makes a run slower. Prints {"entries", "seconds", "entries_per_s", ...}.

Wall-clock rates on a shared machine say as much about the neighbours as about the verifier, so the
CPU time per entry is reported too: the verifier's processes, and (embedded server only) the
PostgreSQL backends that served it. `entries_per_s_if_cpus_free` is what that CPU time allows on
this machine's CPUs when nothing else runs on them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.postgres.ledger_reader import SnapshotOpener, open_snapshot  # noqa: E402
from adapters.postgres.ledger_store import PostgresLedger  # noqa: E402
from application.verification import VerifyOptions, verify_ledger  # noqa: E402
from domain.ledger import NewEvent  # noqa: E402
from ops.bench.scratch_database import scratch_database  # noqa: E402

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


def verify_once(url: str, workers: int, postmaster: int | None) -> tuple[float, int, float, float | None]:
    """Seconds, entries, verifier CPU seconds, server CPU seconds (None when the server is not local)."""
    server_before = server_cpu(postmaster)
    verifier_before = verifier_cpu()
    started = time.perf_counter()
    with open_snapshot(url) as (reader, snapshot):
        report = verify_ledger(reader, VerifyOptions(workers=workers), opener=SnapshotOpener(url, snapshot))
    seconds = time.perf_counter() - started
    if report.fault is not None:
        raise SystemExit(f"the benchmark ledger does not verify: {report.fault}")
    time.sleep(0.2)  # let the postmaster reap the backends, whose CPU time it then accounts
    server_after = server_cpu(postmaster)
    server = server_after - server_before if server_after is not None and server_before is not None else None
    return seconds, report.size, verifier_cpu() - verifier_before, server


def verifier_cpu() -> float:
    """CPU seconds of this process and of its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def server_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of the postmaster and of its finished children (the backends), from /proc."""
    if postmaster is None:
        return None
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a server to create the benchmark database on (superuser)")
    args = parser.parse_args()

    with scratch_database(args.database_url, "nexus_bench_verify") as scratch:
        url = scratch.admin_url
        fill_seconds = fill(url, args.entries)
        with psycopg.connect(url, autocommit=True) as conn:
            # A steady-state ledger: hint bits set and statistics known, so neither the first
            # verification nor an autovacuum running beside it is measured.
            conn.execute("VACUUM (ANALYZE) ledger.events, ledger.merkle_nodes, ledger.heads")
        runs = [verify_once(url, args.workers, scratch.postmaster) for _ in range(max(1, args.repeat))]
    seconds, size, verifier, server_seconds = min(runs)
    cpus = os.cpu_count() or 1
    result: dict[str, object] = {
        "entries": size,
        "seconds": round(seconds, 3),
        "entries_per_s": round(size / seconds),
        "workers": args.workers,
        "runs_s": [round(run[0], 3) for run in runs],
        "verifier_cpu_us_per_entry": round(verifier / size * 1e6, 2),
    }
    if server_seconds is not None:
        total = verifier + server_seconds
        result["server_cpu_us_per_entry"] = round(server_seconds / size * 1e6, 2)
        result["entries_per_s_if_cpus_free"] = round(size / (total / min(cpus, 2 * args.workers)))
    result.update({"fill_s": round(fill_seconds, 1), "cpus": cpus, "load_average_1m": round(os.getloadavg()[0], 2)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
