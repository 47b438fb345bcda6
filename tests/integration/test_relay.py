"""The relay puts every ledger position into JetStream exactly once, in order, across kills and restarts."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time

import nats
import pytest

from adapters.nats.connect import connect
from adapters.nats.relay import Relay, StreamBelongsToAnotherLedger, ensure_stream
from domain.ledger import NewEvent
from tests.integration.nats_helpers import assert_exactly_once_in_order, read_stream


def _append_concurrently(ledger, total: int, writers: int = 16) -> None:
    per_writer = total // writers

    def write(w: int) -> None:
        rng = random.Random(w)
        for i in range(per_writer):
            batch = rng.randint(1, 4)
            ledger.append([NewEvent(f"inference-{w}-{i}", "InferenceCompleted", {"i": i, "k": k}, tenant_id=f"t{w % 3}")
                           for k in range(batch)])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def _relay_until_caught_up(ledger, nats_url, names, timeout=60.0) -> Relay:
    nc = await connect(nats_url, "test-relay")
    try:
        relay = Relay(ledger, nc.jetstream(), names)
        await relay.start()
        deadline = time.monotonic() + timeout
        while relay.next_position <= ledger.head().size:
            await relay.step()
            assert time.monotonic() < deadline, "relay did not catch up"
        return relay
    finally:
        await nc.close()


async def _stream_messages(nats_url, names):
    nc = await nats.connect(nats_url)
    try:
        return await read_stream(nc.jetstream(), names.stream, names.subject_prefix)
    finally:
        await nc.close()


def test_every_position_reaches_jetstream_once_in_order_with_its_hash(ledger, nats_url, stream_names):
    async def scenario():
        stop = asyncio.Event()
        nc = await connect(nats_url, "test-relay")
        relay = Relay(ledger, nc.jetstream(), stream_names)
        running = asyncio.create_task(relay.run(stop))
        await asyncio.to_thread(_append_concurrently, ledger, 800)
        while relay.next_position <= ledger.head().size:
            await asyncio.sleep(0.05)
        stop.set()
        await running
        await nc.close()
        return await _stream_messages(nats_url, stream_names)

    messages = asyncio.run(scenario())
    assert len(messages) == ledger.head().size >= 800
    assert_exactly_once_in_order(messages, ledger)


def test_a_second_relay_or_a_rerun_publishes_nothing_twice(ledger, nats_url, stream_names):
    _append_concurrently(ledger, 100, writers=4)
    asyncio.run(_relay_until_caught_up(ledger, nats_url, stream_names))
    again = asyncio.run(_relay_until_caught_up(ledger, nats_url, stream_names))
    assert again.published == 0
    assert_exactly_once_in_order(asyncio.run(_stream_messages(nats_url, stream_names)), ledger)


def test_the_stream_of_another_ledger_is_refused(ledger, nats_url, stream_names):
    async def scenario():
        nc = await connect(nats_url, "test")
        try:
            await ensure_stream(nc.jetstream(), stream_names, "00000000-0000-0000-0000-000000000000")
            with pytest.raises(StreamBelongsToAnotherLedger):
                await ensure_stream(nc.jetstream(), stream_names, ledger.genesis().ledger_id)
        finally:
            await nc.close()

    asyncio.run(scenario())


async def _last_sequence(nats_url, names) -> int:
    nc = await nats.connect(nats_url)
    try:
        return (await nc.jetstream().stream_info(names.stream)).state.last_seq
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


def _relay_process(database, nats_url, names, tmp_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "NEXUS_DATABASE_URL": database.admin_url,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_NATS_STREAM": names.stream,
        "NEXUS_NATS_SUBJECT_PREFIX": names.subject_prefix,
        "NEXUS_DATA_DIR": str(tmp_path),
    }
    return subprocess.Popen([sys.executable, "-m", "api.cli", "relay"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_kill_9_of_the_relay_at_random_moments_loses_and_doubles_nothing(ledger, database, nats_url, stream_names, tmp_path):
    stop_writing = threading.Event()

    def keep_appending() -> None:
        i = 0
        while not stop_writing.is_set():
            ledger.append([NewEvent(f"inference-{i}", "InferenceCompleted", {"i": i})])
            i += 1
            time.sleep(0.001)

    writer = threading.Thread(target=keep_appending)
    writer.start()
    rng = random.Random(7)
    progress = []
    try:
        for _ in range(6):
            before = asyncio.run(_last_sequence(nats_url, stream_names))
            relay = _relay_process(database, nats_url, stream_names, tmp_path)
            # Kill it mid-stream: once it has published something, at a random moment after that.
            deadline = time.monotonic() + 60
            while asyncio.run(_last_sequence(nats_url, stream_names)) == before:
                assert time.monotonic() < deadline, "the relay process published nothing"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
            relay.send_signal(signal.SIGKILL)
            relay.wait(timeout=10)
            progress.append(asyncio.run(_last_sequence(nats_url, stream_names)))
    finally:
        stop_writing.set()
        writer.join()
    assert len(set(progress)) >= 3, f"the killed relays should have made progress: {progress}"
    asyncio.run(_relay_until_caught_up(ledger, nats_url, stream_names))
    messages = asyncio.run(_stream_messages(nats_url, stream_names))
    assert len(messages) == ledger.head().size > 0
    assert_exactly_once_in_order(messages, ledger)
