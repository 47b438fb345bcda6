"""Several API processes on one port (`nexus up --api-processes N`) behave as one API.

The kernel spreads connections among the processes (SO_REUSEPORT); each test finds out which process
served a connection from /proc, so that it can speak to each process on purpose. What one process
keeps in memory must never let it answer what another has already refused: a key revoked through one
process is refused by every process at once, and every answer carries a receipt for a record in the
one ledger.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adapters.embedded import free_port, wait_for_port
from api import api_processes
from api.bootstrap import bootstrap
from api.settings import Settings
from tests.fakes.harness import Gateway, upstreams  # noqa: F401 - fixtures

HELLO = [{"role": "user", "content": "Say hello to every process"}]
PROCESSES = 2


@pytest.fixture
def processes(database: Any, nats_url: str, tmp_path: Path, upstreams,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gateway, list[subprocess.Popen[bytes]]]]:
    """Tenant acme and its key made here; PROCESSES API processes serving them on one port."""
    yield from serving(database, nats_url, tmp_path, upstreams, monkeypatch)


BURST = 6


@pytest.fixture
def rate_limited_processes(database: Any, nats_url: str, tmp_path: Path, upstreams,
                           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gateway, list[subprocess.Popen[bytes]]]]:
    """The same, with a key allowed BURST requests and then about none (one a minute)."""
    monkeypatch.setenv("NEXUS_RATE_LIMIT_KEY_BURST", str(BURST))
    monkeypatch.setenv("NEXUS_RATE_LIMIT_KEY_PER_MINUTE", "1")
    yield from serving(database, nats_url, tmp_path, upstreams, monkeypatch)


def serving(database: Any, nats_url: str, tmp_path: Path, upstreams,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gateway, list[subprocess.Popen[bytes]]]]:
    data_dir = tmp_path / "data"
    container = bootstrap(Settings(database_url=database.admin_url, data_dir=data_dir))
    container.identity.create_tenant("acme")
    key, _ = container.identity.issue_key("acme", ["inference", "read"], "tests")
    settings = Settings(data_dir=data_dir, host="127.0.0.1", port=free_port())
    monkeypatch.setenv("NEXUS_LOCAL_MODEL", "off")
    started = api_processes.spawn(PROCESSES, settings, database_url=database.admin_url,
                                  app_database_url=database.app_url, nats_url=nats_url)
    try:
        wait_for_port("127.0.0.1", settings.port, timeout=60)
        gateway = Gateway(f"http://127.0.0.1:{settings.port}", key.token, container, upstreams)
        wait_until_each_serves(gateway, started)
        yield gateway, started
    finally:
        api_processes.stop(started)
        container.close()


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def serving_pid(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which process holds the server side of the connection from client_port (from /proc/net/tcp)."""
    wanted = f":{server_port:04X}", f":{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(wanted[0]) and fields[2].endswith(wanted[1]):
            inode = fields[9]
    if inode is None:
        return None
    return next((pid for pid in pids if inode in _socket_inodes(pid)), None)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str


class Connection:
    """One keep-alive HTTP/1.1 connection to the port, and so to whichever process accepted it."""

    def __init__(self, gw: Gateway) -> None:
        self._http = http.client.HTTPConnection(gw.url.removeprefix("http://"), timeout=10)
        self._http.connect()
        self._token = gw.token
        self.client_port = self._http.sock.getsockname()[1]

    def chat(self) -> Answer:
        body = orjson.dumps({"model": "gpt-test", "messages": HELLO})
        self._http.request("POST", "/v1/chat/completions", body, {
            "authorization": f"Bearer {self._token}", "content-type": "application/json"})
        answer = self._http.getresponse()
        return Answer(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read().decode())

    def close(self) -> None:
        self._http.close()


def connection_to(gw: Gateway, pid: int, pids: list[int], attempts: int = 200) -> Connection:
    """A connection served by process `pid`: new ones are made until the kernel gives one to it."""
    port = int(gw.url.rsplit(":", 1)[1])
    for _ in range(attempts):
        connection = Connection(gw)
        for _ in range(50):  # accepted by then, unless that process is still starting
            if (served_by := serving_pid(port, connection.client_port, pids)) is not None:
                break
            time.sleep(0.01)
        if served_by == pid:
            return connection
        connection.close()
    raise AssertionError(f"no connection was served by process {pid} in {attempts} tries")


def wait_until_each_serves(gw: Gateway, started: list[subprocess.Popen[bytes]]) -> None:
    for process in started:  # each process has bound the port once it accepts a connection of its own
        connection_to(gw, process.pid, [p.pid for p in started], attempts=400).close()


def test_every_process_answers_with_a_receipt_for_the_one_ledger(processes):
    gw, started = processes
    gw.deploy("primary")
    pids = [p.pid for p in started]
    receipts = []
    for pid in pids:
        with closing(connection_to(gw, pid, pids)) as connection:
            for _ in range(2):
                answer = connection.chat()
                assert answer.status == 200, answer.text
                receipts.append(answer.headers["nexus-receipt"])
    positions = sorted(int(r.split(";")[0].removeprefix("position=")) for r in receipts)
    assert len(set(positions)) == 4  # one chain: no two processes handed out one position
    assert len(gw.events("InferenceCompleted")) == 4


def test_a_key_revoked_through_one_process_is_refused_by_every_process_at_once(processes):
    """Each process goes ahead unread on a key it verified lately, so a revocation made elsewhere must reach
    it: the revoking commit announces it (change notices), and each process forgets the key before its next
    request. (A process the notice has not reached yet still withholds the answer: its append is conditional
    on the key's stream, tests/integration/test_gateway_errors.py.)"""
    gw, started = processes
    upstream = gw.deploy("primary")
    pids = [p.pid for p in started]
    clients = [connection_to(gw, pid, pids) for pid in pids]
    try:
        for client in clients:  # each process has now seen the key work, and would go ahead on it unread
            assert client.chat().status == 200
        [key] = gw.container.identity.list_keys("acme")
        gw.container.identity.revoke_key("acme", key["key_id"], reason="leaked")  # by yet another process: this one
        time.sleep(0.2)  # the notice's way to each process (milliseconds)
        for client in clients:
            refused = client.chat()
            assert refused.status == 401, refused.text
            assert "nexus-receipt" not in refused.headers
    finally:
        for client in clients:
            client.close()
    assert len(gw.events("InferenceCompleted")) == len(pids)  # no answer went out for the revoked key
    assert len(gw.script(upstream).requests) == len(pids)  # nor did any call: each process read the key again
    assert gw.payloads("InferenceFailed") == []


def test_a_rate_limit_holds_across_processes_not_once_per_process(rate_limited_processes):
    """Each process checks its own buckets (no round trip per request) and tells the others what it spent
    every tenth of a second: a key allowed six requests gets six in all, not six from each process."""
    gw, started = rate_limited_processes
    gw.deploy("primary")
    pids = [p.pid for p in started]
    clients = [connection_to(gw, pid, pids) for pid in pids]
    try:
        # wait_until_each_serves spent nothing: its connections made no request
        assert [clients[0].chat().status for _ in range(4)] == [200] * 4
        time.sleep(0.5)  # a few exchanges
        statuses = [clients[1].chat().status for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        time.sleep(0.5)
        refused = clients[0].chat()
        assert refused.status == 429 and refused.headers["retry-after"]
    finally:
        for client in clients:
            client.close()
    assert len(gw.events("InferenceCompleted")) == BURST


def test_stopping_the_processes_ends_them_all(processes):
    gw, started = processes
    api_processes.stop(started)
    assert all(p.poll() is not None for p in started)


def listening_pids(port: int) -> set[int]:
    """The processes holding a listening socket on `port` (state 0A in /proc/net/tcp)."""
    inodes = {fields[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
              if (fields := line.split())[1].endswith(f":{port:04X}") and fields[3] == "0A"}
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if inodes & _socket_inodes(int(entry.name)):
                    pids.add(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
    return pids


def test_nexus_up_serves_one_port_from_as_many_processes_as_asked_and_stops_them_all(database, nats_url, tmp_path):
    port = free_port()
    env = {**os.environ, "NEXUS_DATABASE_URL": database.admin_url, "NEXUS_NATS_URL": nats_url,
           "NEXUS_DATA_DIR": str(tmp_path / "data"), "NEXUS_LOCAL_MODEL": "off", "NEXUS_PORT": str(port)}
    up = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--api-processes", "3"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        deadline = time.monotonic() + 60
        while len(pids := listening_pids(port)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert up.pid in pids and len(pids) == 3
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) is not None
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
