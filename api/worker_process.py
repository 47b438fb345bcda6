"""The background workers of `nexus up` (relay, projection consumers, sweeper) in a process of their own.

In the API's process they shared its GIL: at 100 req/s the projections' batches took a quarter of the
process's Python time and the gateway queued behind them (docs/gateway.md, "Workers beside the API").
In a process of their own they run on the other core. The at-scale deployment runs each worker as its
own command instead (`nexus relay`, `nexus project NAME`).

    python -m api.worker_process       # configured by NEXUS_* (set by spawn())
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading

from api import child_processes
from api.settings import Settings


def spawn(settings: Settings, *, database_url: str, app_database_url: str, nats_url: str) -> subprocess.Popen[bytes]:
    return child_processes.start("api.worker_process", settings, database_url=database_url,
                                 app_database_url=app_database_url, nats_url=nats_url)


def main() -> None:
    from api.bootstrap import bootstrap
    from api.workers import BackgroundWorkers, in_process_workers

    if not child_processes.die_with_parent():
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    settings = Settings()
    container = bootstrap(settings)
    assert settings.nats_url, "spawn() passes the NATS URL of the process that starts this one"
    workers = BackgroundWorkers(in_process_workers(container, settings.nats_url))
    workers.start()
    try:
        stopping.wait()
    finally:
        workers.stop()
        container.close()


if __name__ == "__main__":
    main()
