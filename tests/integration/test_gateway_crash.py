"""A gateway process killed mid-request leaves a record that a sweeper closes, exactly once.

The API runs as a real uvicorn process; it is killed with SIGKILL while a slow stream (or a NEXUS run)
is in flight. Its InferenceRequested was recorded while the upstream call was in flight; a sweeper
(any process, any number of them) closes it with InferenceFailed(gateway_interrupted) once its
deadline has passed, and two sweepers racing record that failure once.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adapters.embedded import free_port, wait_for_port
from api.bootstrap import bootstrap
from api.settings import Settings
from application.inference_sweeper import InferenceSweeper
from domain.deployments import InvalidDeployment
from domain.identity import UnknownTenant
from domain.inference import parse_instant
from tests.fakes.harness import Gateway, gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import drip, ok, slow

ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "Say hello to the gateway"}]


@pytest.fixture
def process_gw(database: Any, tmp_path: Path, upstreams) -> Iterator[tuple[Gateway, subprocess.Popen[bytes]]]:
    """Tenant acme and its key made here; the API serving them in a process of its own."""
    data_dir = tmp_path / "data"
    container = bootstrap(Settings(database_url=database.admin_url, data_dir=data_dir))
    container.identity.create_tenant("acme")
    key, _ = container.identity.issue_key("acme", ["inference", "read"], "tests")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.api_process", database.admin_url, str(data_dir),
                                str(port)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        yield Gateway(f"http://127.0.0.1:{port}", key.token, container, upstreams), process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        container.close()


def kill_9(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def deadline_of(gw: Gateway, event_type: str) -> dt.datetime:
    [requested] = gw.payloads(event_type)
    return parse_instant(requested["deadline_at"])


def at(moment: dt.datetime):  # type: ignore[no-untyped-def]
    return lambda: moment


def test_a_stream_in_flight_when_the_process_dies_is_closed_once_as_interrupted(process_gw):
    gw, process = process_gw
    upstream = gw.deploy("primary")
    gw.script(upstream).then(drip(0.3))  # a slow stream: a word every 0.3 s
    received = []
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.token}"}, timeout=10) as http:
        with pytest.raises(httpx.HTTPError):  # the connection dies with the process
            with http.stream("POST", "/v1/chat/completions", headers={"nexus-timeout": "20"},
                             json={"model": "gpt-test", "messages": HELLO, "stream": True}) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        received.append(line)
                        if len(received) == 2:
                            assert gw.wait_for("InferenceRequested")  # recorded while the stream is in flight
                            kill_9(process)
    assert len(received) == 2
    [requested] = gw.events("InferenceRequested")
    assert not gw.events("InferenceCompleted", "InferenceFailed")
    deadline = deadline_of(gw, "InferenceRequested")
    assert deadline - parse_instant(requested.recorded_at) >= dt.timedelta(seconds=20)  # timeout + grace

    # Before the deadline the request may still be live somewhere: nothing is closed.
    early = InferenceSweeper(gw.container.ledger, clock=at(deadline - dt.timedelta(seconds=1)))
    assert early.sweep_once().closed_inferences == [] and early.open_count == 1

    # Two sweepers that both saw it open close it at once: one append wins, the other loses the race.
    late = deadline + dt.timedelta(seconds=1)
    sweepers = [InferenceSweeper(gw.container.ledger, clock=at(deadline - dt.timedelta(seconds=1))) for _ in range(2)]
    for sweeper in sweepers:
        sweeper.sweep_once()  # each has read the open request
        sweeper._clock = at(late)
    barrier = threading.Barrier(2)
    reports = []

    def race(sweeper: InferenceSweeper) -> None:
        barrier.wait()
        reports.append(sweeper.sweep_once())

    threads = [threading.Thread(target=race, args=(s,)) for s in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(len(r.closed_inferences) for r in reports) == [0, 1]
    assert sorted(r.lost_races for r in reports) == [0, 1]

    [failed] = gw.events("InferenceFailed")
    p = orjson.loads(failed.payload)
    assert (p["reason"], p["request_id"], failed.stream_version) == ("gateway_interrupted",
                                                                     orjson.loads(requested.payload)["request_id"], 2)
    assert orjson.loads(failed.metadata)["causation_id"] == str(requested.event_id)
    # A sweeper started later (a restarted process) finds nothing left to close.
    assert InferenceSweeper(gw.container.ledger, clock=at(late)).sweep_once().closed_inferences == []
    assert len(gw.events("InferenceFailed")) == 1


def test_a_nexus_run_in_flight_when_the_process_dies_is_closed_with_its_inference(process_gw):
    gw, process = process_gw
    upstream = gw.deploy("lead", model_name="lead")
    gw.script(upstream).then(slow(30))  # the planner never answers before the kill
    done = threading.Event()

    def start_run() -> None:
        try:
            with gw.http() as http:
                http.post("/v1/nexus/runs", json={"task": "Plan something", "timeout": 20})
        except httpx.HTTPError:
            pass  # the process died under it
        done.set()

    client = threading.Thread(target=start_run, daemon=True)
    client.start()
    assert gw.wait_for("InferenceRequested", timeout_s=30)  # the planner's call is in flight
    assert gw.wait_for("OrchestrationRequested")
    kill_9(process)
    assert done.wait(10)

    late = deadline_of(gw, "OrchestrationRequested") + dt.timedelta(seconds=1)
    report = InferenceSweeper(gw.container.ledger, clock=at(late)).sweep_once()
    assert len(report.closed_inferences) == 1 and len(report.closed_runs) == 1
    [failed_run] = gw.payloads("OrchestrationFailed")
    assert failed_run["code"] == "gateway_interrupted" and failed_run["inferences"] == 1
    [failed] = gw.payloads("InferenceFailed")
    assert failed["reason"] == "gateway_interrupted"
    assert InferenceSweeper(gw.container.ledger, clock=at(late)).sweep_once().closed_runs == []


def test_bad_input_still_records_nothing_and_answered_requests_leave_nothing_open(process_gw):
    gw, _ = process_gw
    gw.deploy("primary")
    with gw.http() as http:
        assert http.post("/v1/chat/completions", content=b"{not json").status_code == 400
        assert http.post("/v1/chat/completions", json={"model": "nope", "messages": HELLO}).status_code == 404
        assert http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": HELLO}).status_code == 200
    assert [e.type for e in gw.events()  if e.stream_id.startswith("inference-")] == [
        "InferenceRequested", "InferenceCompleted"]
    sweeper = InferenceSweeper(gw.container.ledger, clock=at(dt.datetime.now(dt.UTC) + dt.timedelta(days=1)))
    assert sweeper.sweep_once().closed_inferences == [] and sweeper.open_count == 0


def test_a_slow_call_is_recorded_as_requested_while_in_flight_and_a_fast_one_in_one_append(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(slow(0.5)).then(ok())
    done = threading.Event()

    def call() -> None:
        gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
        done.set()

    threading.Thread(target=call, daemon=True).start()
    [requested] = gw.wait_for("InferenceRequested")  # while the upstream is still thinking
    assert not done.is_set() and not gw.events("InferenceCompleted")
    assert parse_instant(requested["deadline_at"]) > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    assert done.wait(10)
    # A call answered before record_requested_after_s (made long here, so that a loaded machine cannot
    # make this one slow) is recorded in one append: both events share one commit.
    gw.container.gateway.config = replace(gw.container.gateway.config, record_requested_after_s=30.0)
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    requested, completed = gw.events("InferenceRequested"), gw.events("InferenceCompleted")
    assert [e.stream_version for e in requested + completed] == [1, 1, 2, 2]
    assert requested[0].recorded_at < completed[0].recorded_at  # the slow call: two commits, 0.5 s apart
    assert requested[1].recorded_at == completed[1].recorded_at  # the fast call: one


def test_by_default_a_fast_call_reaches_the_upstream_before_its_record_commits(gw):
    """The window strict recording closes: a process killed now would leave no record of this call."""
    # The timer made long, so that a loaded machine cannot make this call outlast it.
    gw.container.gateway.config = replace(gw.container.gateway.config, record_requested_after_s=30.0)
    upstream = gw.deploy("primary")
    seen: list[int] = []
    gw.script(upstream).on_request = lambda: seen.append(len(gw.events("InferenceRequested")))
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    assert seen == [0]
    assert len(gw.events("InferenceRequested", "InferenceCompleted")) == 2


def test_with_strict_recording_no_byte_goes_upstream_before_the_request_is_committed(gw):
    gw.container.gateway.config = replace(gw.container.gateway.config, record_before_upstream=True)
    upstream = gw.deploy("primary")
    seen: list[int] = []
    gw.script(upstream).on_request = lambda: seen.append(len(gw.events("InferenceRequested")))
    client = gw.client()
    for _ in range(3):
        client.chat.completions.create(model="gpt-test", messages=HELLO)
    with client.chat.completions.create(model="gpt-test", messages=HELLO, stream=True) as stream:
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert seen == [1, 2, 3, 4]  # each call found its own record committed already
    requested, completed = gw.events("InferenceRequested"), gw.events("InferenceCompleted")
    assert len(completed) == 4
    assert [e.stream_version for e in requested] == [1] * 4 and [e.stream_version for e in completed] == [2] * 4
    assert all(r.position < c.position for r, c in zip(requested, completed, strict=True))


def test_a_tenant_in_strict_recording_mode_gets_it_alone_and_can_go_back(gw):
    # The timer made long: a deferred call is recorded only with its outcome, after the upstream saw it.
    gw.container.gateway.config = replace(gw.container.gateway.config, record_requested_after_s=30.0)
    gw.container.identity.create_tenant("beta")
    beta_key, _ = gw.container.identity.issue_key("beta", ["inference"])
    strict_upstream, deferred_upstream = gw.deploy("primary"), gw.deploy("primary", tenant="beta")
    seen: dict[str, list[int]] = {"acme": [], "beta": []}
    gw.script(strict_upstream).on_request = lambda: seen["acme"].append(len(gw.events("InferenceRequested")))
    gw.script(deferred_upstream).on_request = lambda: seen["beta"].append(len(gw.events("InferenceRequested")))
    deployments = gw.container.deployments

    receipt = deployments.set_recording("acme", "strict", actor="admin@acme")
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    gw.client(beta_key.token).chat.completions.create(model="gpt-test", messages=HELLO)
    deployments.set_recording("acme", "deferred", actor="admin@acme")
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)

    # acme's first call found its own record committed; beta's found only acme's; acme's last only the two before
    assert seen == {"acme": [1, 2], "beta": [1]}
    assert len(gw.events("InferenceCompleted")) == 3
    changed = gw.events("RecordingPolicyChanged")
    assert [orjson.loads(e.payload) for e in changed] == [{"tenant_id": "acme", "mode": m} for m in ("strict", "deferred")]
    assert changed[0].position == receipt.position and changed[0].stream_id == "deployments-acme"
    assert orjson.loads(changed[0].metadata) == {"actor": "admin@acme"}
    assert (deployments.recording("acme"), deployments.recording("beta")) == ("deferred", "deferred")


def test_a_recording_mode_that_does_not_exist_or_a_tenant_that_does_not_is_refused_and_nothing_recorded(gw):
    before = len(gw.events())
    with pytest.raises(InvalidDeployment, match="one of \\['deferred', 'strict'\\]"):
        gw.container.deployments.set_recording("acme", "sometimes")
    with pytest.raises(UnknownTenant):
        gw.container.deployments.set_recording("nobody", "strict")
    with pytest.raises(UnknownTenant):  # nor is a mode made up for it
        gw.container.deployments.recording("nobody")
    assert len(gw.events()) == before


def test_with_strict_recording_a_ledger_that_cannot_record_means_no_upstream_call(gw):
    gw.container.gateway.config = replace(gw.container.gateway.config, record_before_upstream=True)
    upstream = gw.deploy("primary")
    gateway = gw.container.gateway
    flaky = _FlakyLedger(gateway._ledger)
    gateway._ledger = flaky
    response = gw.http().post("/v1/chat/completions", json={"model": "gpt-test", "messages": HELLO})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ledger_unavailable"
    assert flaky.refused == 3 and gw.script(upstream).requests == []
    assert gw.events("InferenceRequested", "InferenceCompleted", "InferenceFailed") == []


class _FlakyLedger:
    """The real ledger, except that InferenceRequested appended on its own fails (the ledger is down)."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def append_async(self, events: Any, expected: Any = None) -> Any:
        from domain.ledger import LedgerUnavailable

        if [e.type for e in events] == ["InferenceRequested"]:
            self.refused += 1
            raise LedgerUnavailable("down for the test")
        return await self._ledger.append_async(events, expected)


def test_when_the_in_flight_record_fails_the_outcome_brings_it_along_in_one_append(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(slow(0.4))
    gateway = gw.container.gateway
    flaky = _FlakyLedger(gateway._ledger)
    gateway._ledger = flaky
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    assert flaky.refused == 3  # tried, with its retries, while the call was in flight
    requested, completed = gw.events("InferenceRequested", "InferenceCompleted")
    assert (requested.stream_version, completed.stream_version) == (1, 2)
    assert requested.recorded_at == completed.recorded_at  # written together, after the answer


def test_the_sweeper_runs_as_a_worker_until_stopped(gw):
    import asyncio

    async def scenario() -> int:
        stop = asyncio.Event()
        sweeper = InferenceSweeper(gw.container.ledger)
        task = asyncio.ensure_future(sweeper.run(stop, interval_s=0.05))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 5)
        return sweeper.open_count

    assert asyncio.run(scenario()) == 0


def test_a_live_stream_never_outlasts_the_deadline_it_recorded(gw):
    upstream = gw.deploy("primary")
    gw.script(upstream).then(drip(0.2))  # six words, 0.2 s apart
    gw.container.gateway.config = replace(gw.container.gateway.config, max_stream_s=0.5, sweep_grace_s=1.0)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", headers={"nexus-timeout": "0.5"},
                             json={"model": "gpt-test", "messages": HELLO, "stream": True})
    assert "longest allowed duration" in response.text
    [requested] = gw.events("InferenceRequested")
    [completed] = gw.events("InferenceCompleted")
    p = orjson.loads(completed.payload)
    assert p["finish"] == "upstream_cut" and 1 <= p["tokens_out"] < 6
    # cut at timeout + max_stream_s (1 s) and recorded within the grace: before any sweeper may close it
    deadline = deadline_of(gw, "InferenceRequested")
    assert parse_instant(completed.recorded_at) < deadline <= parse_instant(requested.recorded_at) + dt.timedelta(
        seconds=2.0)


def test_strict_recording_is_a_setting(database, tmp_path):
    container = bootstrap(Settings(database_url=database.admin_url, data_dir=tmp_path / "data",
                                   record_before_upstream=True))
    try:
        assert container.gateway.config.record_before_upstream
    finally:
        container.close()
