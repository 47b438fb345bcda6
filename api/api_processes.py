"""More API processes on the same port, for `nexus up --api-processes N`.

One Python process serves one core at most: its event loop and the ledger's committer thread share
one GIL. Further API processes bind the same port with SO_REUSEPORT, so the kernel spreads new
connections among them. They serve HTTP only: the background workers, the checkpoint signer and
the local model stay in the `nexus up` process, which also owns the embedded PostgreSQL and NATS and
hands their URLs to the API processes. What each process keeps in memory is per process, as with
several hosts behind a load balancer (docs/architecture.md, "API processes").

    python -m api.api_processes        # one API process, configured by NEXUS_* (set by spawn())
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from api.settings import Settings

STOP_TIMEOUT_S = 10.0


def spawn(count: int, settings: Settings, *, database_url: str, app_database_url: str,
          nats_url: str) -> list[subprocess.Popen[bytes]]:
    """Start `count` API processes on settings.host:port beside this one (which must bind with reuse_port)."""
    env = {
        **os.environ,
        "NEXUS_DATABASE_URL": database_url,
        "NEXUS_APP_DATABASE_URL": app_database_url,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "NEXUS_HOST": settings.host,
        "NEXUS_PORT": str(settings.port),
    }
    return [subprocess.Popen([sys.executable, "-m", "api.api_processes"], env=env) for _ in range(count)]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (uvicorn finishes the requests in flight), then SIGKILL whatever has not exited in time."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the one that started it dies, even by SIGKILL (no orphans holding the port)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def main() -> None:
    from api.app import create_app
    from api.bootstrap import bootstrap
    from api.serving import serve

    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
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
