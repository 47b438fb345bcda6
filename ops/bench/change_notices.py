"""How soon another API process stops using what a change made elsewhere replaced: prints JSON.

    .venv/bin/python ops/bench/change_notices.py [--changes 200] [--database-url URL]

Two processes' worth of services on one database, each on its own connections: "here" caches a key it
verified and a subject's data key, with a clock that never moves (so only a notice can make it read
again), and follows change notices as an API process does (application/change_notices.py); "elsewhere"
revokes the key, or erases the subject. Measured for each change: the time from the moment the change's
call returned elsewhere (its commit done) until "here" no longer holds the copy, polled without sleeping.
Without --database-url an embedded PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.postgres.change_notices import PostgresChangeNotices  # noqa: E402
from adapters.postgres.keystore import MasterKey, PostgresKeyStore  # noqa: E402
from adapters.postgres.ledger_store import PostgresLedger  # noqa: E402
from adapters.secrets import AesGcmCredentialSealer  # noqa: E402
from api.bootstrap import app_url_for  # noqa: E402
from application.change_notices import CacheInvalidation  # noqa: E402
from application.deployments import DeploymentService  # noqa: E402
from application.identity import IdentityService  # noqa: E402
from application.privacy import PrivacyService  # noqa: E402
from ops.bench.scratch_database import scratch_database  # noqa: E402


class Process:
    """The services an API process caches with, on connections of their own."""

    def __init__(self, url: str, master: MasterKey, frozen: bool) -> None:
        options = {"clock": lambda: 100.0} if frozen else {}
        self.ledger = PostgresLedger(url)
        self.identity = IdentityService(self.ledger, **options)
        self.privacy = PrivacyService(PostgresKeyStore(url, master), self.ledger, **options)
        self.deployments = DeploymentService(self.ledger, AesGcmCredentialSealer(master), **options)

    def close(self) -> None:
        self.privacy.close()
        self.ledger.close()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)  # noqa: E731
    return {"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99), "max_ms": round(ordered[-1], 3)}


def until_gone(still_there, deadline_s: float = 5.0) -> float:
    """Milliseconds until `still_there()` is false, from now."""
    started = time.perf_counter()
    while still_there():
        if time.perf_counter() - started > deadline_s:
            raise SystemExit(f"a change was not seen within {deadline_s} s")
        time.sleep(0)  # lets the follower's thread have the GIL
    return (time.perf_counter() - started) * 1000


def measure(url: str, changes: int) -> dict:
    master = MasterKey.generate()
    here, elsewhere = Process(url, master, frozen=True), Process(url, master, frozen=False)
    elsewhere.identity.create_tenant("acme")
    invalidation = CacheInvalidation(here.identity, here.privacy, here.deployments)
    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    follower = threading.Thread(target=loop.run_until_complete,
                                args=(PostgresChangeNotices(url).follow(invalidation, stop),), daemon=True)
    follower.start()
    revocations, erasures = [], []
    try:
        until_gone(lambda: not invalidation.listening)
        for n in range(changes):
            key, _ = elsewhere.identity.issue_key("acme", ["inference"], "bench")
            here.identity.authenticate(key.token)
            subject = f"user-{n}"
            asyncio.run(here.privacy.sealer_async("acme", subject))  # the data key and the switch, as the gateway
            time.sleep(0.005)  # an idle moment, as between requests
            elsewhere.identity.revoke_key("acme", key.key_id)
            token = key.token
            revocations.append(until_gone(lambda t=token: here.identity.recently_authenticated(t) is not None))
            elsewhere.privacy.erase("acme", subject, actor="bench")
            erasures.append(until_gone(lambda s=subject: here.privacy.cached_sealer("acme", s) is not None))
    finally:
        loop.call_soon_threadsafe(stop.set)
        follower.join(timeout=10)
        loop.close()
        here.close()
        elsewhere.close()
    return {"key_revoked": percentiles(revocations), "subject_erased": percentiles(erasures),
            "notices_applied": invalidation.applied}


def main() -> None:
    sys.setswitchinterval(0.0005)  # as an API process runs (NEXUS_GIL_SWITCH_INTERVAL_MS)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200, help="revocations and erasures, each")
    parser.add_argument("--database-url", help="a server to create the benchmark database on (superuser)")
    args = parser.parse_args()
    with scratch_database(args.database_url, "nexus_bench_notices") as scratch:
        figures = measure(app_url_for(scratch.admin_url), args.changes)
    print(json.dumps({
        "benchmark": "change notices: from a change's commit elsewhere until this process dropped its copy",
        "database": "the server of --database-url" if args.database_url else "embedded PostgreSQL",
        "changes": args.changes, **figures}, indent=2))


if __name__ == "__main__":
    main()
