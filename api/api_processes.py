"""More API processes on the same port, for `nexus up --api-processes N`.

One Python process serves one core at most: its event loop and the ledger's committer thread share
one GIL. Further API processes bind the same port with SO_REUSEPORT, so the kernel spreads new
connections among them. They serve HTTP only: the checkpoint signer and the local model stay in the
`nexus up` process (the background workers have their own, api/worker_process.py), which also owns
the embedded PostgreSQL and NATS and hands their URLs to the API processes. What each process keeps
in memory is per process, as with several hosts behind a load balancer (docs/architecture.md, "API
processes").

    python -m api.api_processes        # one API process, configured by NEXUS_* (set by spawn())
"""

from __future__ import annotations

import logging
import subprocess

from api import child_processes
from api.settings import Settings


def spawn(count: int, settings: Settings, *, database_url: str, app_database_url: str,
          nats_url: str) -> list[subprocess.Popen[bytes]]:
    """Start `count` API processes on settings.host:port beside this one (which must bind with reuse_port)."""
    return [child_processes.start("api.api_processes", settings, database_url=database_url,
                                  app_database_url=app_database_url, nats_url=nats_url) for _ in range(count)]


stop = child_processes.stop


def main() -> None:
    from api.app import create_app
    from api.bootstrap import bootstrap
    from api.serving import serve

    if not child_processes.die_with_parent():
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    container = bootstrap(settings)
    try:
        serve(create_app(container), settings, reuse_port=True, log_level="warning")
    finally:
        container.close()


if __name__ == "__main__":
    main()
