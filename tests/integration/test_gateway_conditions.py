"""What a whole answer's record depends on is checked inside its append, not read on every request.

A key this process authenticated lately, and the tenant's content switch it read, go into the append as
expected versions of their streams: the ledger checks them under its lock, in the same round trip as
the record. Only when one of them moved on (another process revoked the key, or turned content storage
off) does the gateway read again, and then it acts on what it finds.

The gateway here hears no change notices (NEXUS_CHANGE_NOTICES=off), as a process does while its listening
connection is down, or before a notice reaches it: with notices, a change made elsewhere makes it read
again at once (tests/integration/test_change_notices.py), and the conditions catch only what is already
under way.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from adapters.postgres.ledger_store import PostgresLedger
from domain.identity import api_key_stream, tenant_stream
from domain.ledger import NewEvent
from domain.sealing import CONTENT_STORAGE_POLICY_CHANGED, REDACTED
from tests.fakes.harness import gw, no_change_notices, upstreams  # noqa: F401 - fixtures

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(autouse=True)
def unnotified(no_change_notices: None) -> None:
    """Every gateway here hears no change notices."""


@pytest.fixture
def stream_reads(gw) -> Iterator[list[str]]:
    """The streams the gateway's process reads on a request's path (the ledger itself is real)."""
    ledger = gw.container.ledger
    real = ledger.read_stream_async
    seen: list[str] = []

    async def counted(stream_id: str, from_version: int = 1) -> Any:
        seen.append(stream_id)
        return await real(stream_id, from_version)

    ledger.read_stream_async = counted
    try:
        yield seen
    finally:
        ledger.read_stream_async = real


def another_process_turns_content_storage_off(database, tenant: str) -> None:
    with PostgresLedger(database.app_url) as elsewhere:
        stream = tenant_stream(tenant)
        version = len(elsewhere.read_stream(stream))
        elsewhere.append([NewEvent(stream, CONTENT_STORAGE_POLICY_CHANGED,
                                   {"tenant_id": tenant, "content_storage": False}, tenant_id=tenant)],
                         {stream: version})


def test_a_known_keys_answers_read_neither_the_key_nor_the_content_switch(gw, stream_reads):
    gw.deploy("primary")
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)  # the first reads both
    stream_reads.clear()
    for _ in range(5):
        gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
        gw.client().embeddings.create(model="gpt-test", input="hello")
    assert stream_reads == []
    completed = gw.payloads("InferenceCompleted")
    assert len(completed) == 11 and all(gw.container.privacy.is_sealed(p["content"]) for p in completed)


def test_content_storage_turned_off_elsewhere_is_seen_by_the_next_record_and_its_content_is_not_stored(
    gw, database, stream_reads
):
    gw.deploy("primary")
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    [sealed] = gw.payloads("InferenceCompleted")
    assert sealed["content"] != dict(REDACTED)
    another_process_turns_content_storage_off(database, gw.tenant)
    stream_reads.clear()
    answer = gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    assert answer.choices[0].message.content
    assert stream_reads == [tenant_stream(gw.tenant)]  # read once, when the append's condition failed
    assert gw.payloads("InferenceCompleted")[-1]["content"] == dict(REDACTED)
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    assert stream_reads == [tenant_stream(gw.tenant)]  # and remembered at its new version
    assert [p["content"] == dict(REDACTED) for p in gw.payloads("InferenceCompleted")] == [False, True, True]


def test_a_key_revoked_elsewhere_fails_its_condition_is_read_and_its_answer_withheld(gw, database, stream_reads):
    from application.identity import IdentityService

    upstream = gw.deploy("primary")
    key, _ = gw.container.identity.issue_key("acme", ["inference"])
    gw.client(token=key.token).chat.completions.create(model="gpt-test", messages=HELLO)
    with PostgresLedger(database.app_url) as elsewhere:
        IdentityService(elsewhere).revoke_key("acme", key.key_id)
    stream_reads.clear()
    with pytest.raises(openai.AuthenticationError):
        gw.client(token=key.token).chat.completions.create(model="gpt-test", messages=HELLO)
    assert len(gw.script(upstream).requests) == 2  # the call went ahead; its answer did not leave
    assert stream_reads == [api_key_stream(key.key_id)]
    [failed] = gw.payloads("InferenceFailed")
    assert failed["reason"] == "key_revoked"
    assert len(gw.payloads("InferenceCompleted")) == 1


def test_under_concurrent_requests_no_answer_leaves_whose_record_follows_the_keys_revocation(gw, database):
    """Requests race a revocation made by another process: every answer given out has its record before the
    revocation in the ledger, and every request recorded after it was refused."""
    from concurrent.futures import ThreadPoolExecutor

    from application.identity import IdentityService

    gw.deploy("primary")
    key, _ = gw.container.identity.issue_key("acme", ["inference"])
    gw.client(token=key.token).chat.completions.create(model="gpt-test", messages=HELLO)  # known to the process

    def ask(_: int) -> tuple[str, str]:
        try:
            answer = gw.client(token=key.token).with_raw_response.chat.completions.create(
                model="gpt-test", messages=HELLO)
            return "answered", answer.headers["nexus-receipt"]
        except openai.AuthenticationError:
            return "refused", ""

    with ThreadPoolExecutor(8) as pool:
        asked = [pool.submit(ask, n) for n in range(80)]
        time.sleep(0.05)  # some answers first
        with PostgresLedger(database.app_url) as elsewhere:
            [revoked] = [IdentityService(elsewhere).revoke_key("acme", key.key_id)]
        outcomes = [f.result() for f in asked]

    answered = [int(receipt.split(";")[0].removeprefix("position=")) for what, receipt in outcomes if what == "answered"]
    assert all(position < revoked.position for position in answered)
    completed = [e.position for e in gw.events("InferenceCompleted")]
    assert all(position < revoked.position for position in completed)
    failed = [orjson.loads(e.payload)["reason"] for e in gw.events("InferenceFailed")]
    assert set(failed) <= {"key_revoked"}
    assert len(completed) == 1 + len(answered)
    assert sum(1 for what, _ in outcomes if what == "refused") == 80 - len(answered)


def test_a_content_switch_that_keeps_moving_withholds_the_answer_as_ledger_unavailable_and_records_nothing(
    gw, database
):
    """Another process changes the tenant's stream before every one of the record's attempts: after three
    rounds the gateway gives up with 503 ledger_unavailable, and none of the attempts wrote anything."""
    gw.deploy("primary")
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)  # the switch is known to the process
    ledger = gw.container.ledger
    real = ledger.append_async
    stream = tenant_stream(gw.tenant)
    moved: list[int] = []

    async def racing(events: Any, expected_versions: Any = None) -> Any:
        if expected_versions and stream in expected_versions:
            with PostgresLedger(database.app_url) as elsewhere:  # storage stays on: only the version moves
                version = len(elsewhere.read_stream(stream))
                elsewhere.append([NewEvent(stream, CONTENT_STORAGE_POLICY_CHANGED,
                                           {"tenant_id": gw.tenant, "content_storage": True}, tenant_id=gw.tenant)],
                                 {stream: version})
                moved.append(version + 1)
        return await real(events, expected_versions)

    # One append per round: the InferenceRequested goes with the outcome, never alone ahead of it (on a slow
    # machine an upstream call over 5 ms did that, and an outcome caught behind it was committed once more).
    gw.container.gateway.config = dataclasses.replace(gw.container.gateway.config, record_requested_after_s=60.0)
    ledger.append_async = racing
    try:
        with pytest.raises(openai.APIStatusError) as refused:
            gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    finally:
        ledger.append_async = real
    assert refused.value.status_code == 503
    assert refused.value.body["code"] == "ledger_unavailable"
    assert len(moved) == 3  # one move per round, and no fourth attempt
    assert len(gw.payloads("InferenceCompleted")) == 1  # the first request's only
