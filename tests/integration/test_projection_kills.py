"""kill -9 of a projection process, at random moments while events flow, neither loses nor doubles an effect.

The projection runs as `nexus project NAME` (its own OS process, as at scale) fed by `nexus relay`;
after every kill it is restarted. At the end the live read model must equal a from-scratch build
from the ledger, row for row.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from domain.ledger import LedgerUnavailable
from projections.registry import DEPLOYED
from projections.store import ProjectionStore
from tests.integration.test_projections_support import completed, failed, rows_of


def _worker(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "api.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _keep_appending(ledger, stop: threading.Event) -> None:
    rng = random.Random(3)
    while not stop.is_set():
        tenant = rng.choice(["acme", "globex"])
        model = rng.choice(["gpt-4o", "claude-sonnet", "deepseek-v3"])
        event = (completed(tenant=tenant, model=model, latency_us=rng.randint(1_000, 5_000_000),
                           cost_micros=rng.randint(1, 9_999))
                 if rng.random() < 0.9 else failed(tenant=tenant, model=model))
        try:
            ledger.append([event])
        except LedgerUnavailable:
            pass
        time.sleep(0.002)


@pytest.mark.slow
def test_kill_9_of_projection_processes_leaves_read_models_equal_to_a_rebuild(ledger, database, nats_url,
                                                                             stream_names, tmp_path):
    env = {**os.environ, "NEXUS_DATABASE_URL": database.admin_url, "NEXUS_NATS_URL": nats_url,
           "NEXUS_NATS_STREAM": stream_names.stream, "NEXUS_NATS_SUBJECT_PREFIX": stream_names.subject_prefix,
           "NEXUS_DATA_DIR": str(tmp_path)}
    relay = _worker(["relay"], env)
    stop = threading.Event()
    writer = threading.Thread(target=_keep_appending, args=(ledger, stop))
    writer.start()
    rng = random.Random(11)
    store = ProjectionStore(database.app_url)
    kills = 0
    try:
        for _ in range(4):
            before = {p.name: store.checkpoint(p.name) for p in DEPLOYED}
            workers = [_worker(["project", p.name], env) for p in DEPLOYED]
            # Kill them mid-stream: once each has applied something, at a random moment after that.
            deadline = time.monotonic() + 60
            while any(store.checkpoint(p.name) == before[p.name] for p in DEPLOYED):
                assert time.monotonic() < deadline, "a projection process applied nothing"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
            for worker in workers:
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=10)
                kills += 1
        stop.set()
        writer.join()
        head = ledger.head().size
        workers = [_worker(["project", p.name], env) for p in DEPLOYED]
        deadline = time.monotonic() + 60
        while any(store.checkpoint(p.name) < head for p in DEPLOYED):
            assert time.monotonic() < deadline, {p.name: store.checkpoint(p.name) for p in DEPLOYED}
            time.sleep(0.1)
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=10)
    finally:
        stop.set()
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=10)

    assert kills == 4 * len(DEPLOYED)
    for projection in DEPLOYED:
        with store.scratch(projection) as scratch:
            scratch.fill_from_ledger(ledger, 1, head)
            rebuilt = rows_of(store, projection, scratch.schema)
        live = rows_of(store, projection)
        assert live == rebuilt, f"{projection.name}: live read model differs from a rebuild"
        assert any(live.values()), f"{projection.name}: the read model should not be empty"
    store.close()
