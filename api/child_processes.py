"""Processes that `nexus up` starts beside itself (more API processes, the background workers).

They run on the `nexus up` process's databases: it hands them the URLs of the PostgreSQL and NATS it
uses (embedded or not), stops them when it stops, and takes them with it if it dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from api.settings import Settings

STOP_TIMEOUT_S = 10.0


def start(module: str, settings: Settings, *, database_url: str, app_database_url: str,
          nats_url: str) -> subprocess.Popen[bytes]:
    """`python -m module`, configured (NEXUS_*) to share this process's servers and data folder."""
    env = {
        **os.environ,
        "NEXUS_DATABASE_URL": database_url,
        "NEXUS_APP_DATABASE_URL": app_database_url,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "NEXUS_HOST": settings.host,
        "NEXUS_PORT": str(settings.port),
    }
    return subprocess.Popen([sys.executable, "-m", module], env=env)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (each finishes what it has in flight), then SIGKILL whatever has not exited in time."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def die_with_parent() -> bool:
    """In a child: be sent SIGTERM when the parent dies, even by SIGKILL (Linux). False if it is gone already."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    return os.getppid() == parent  # else it died before the line above took effect
