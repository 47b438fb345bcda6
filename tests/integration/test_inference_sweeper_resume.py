"""A sweeper resumes where the last one stopped, however long ago, instead of a fixed lookback.

After each sweep it saves the position of the oldest stream it still holds open (workers.resume_positions);
a sweeper started later, even after an outage longer than its lookback, reads from there and closes the
orphans that were open when the system stopped. Without the saved position, those orphans are out of
reach, which is what the first test shows side by side.
"""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest

from adapters.postgres.resume_positions import PostgresResumePositions
from application.inference_sweeper import InferenceSweeper
from domain.inference import InferenceCompleted, InferenceRequested, deadline_after, inference_stream
from domain.ledger import NewEvent

NOW = dt.datetime.now(dt.UTC)
THREE_DAYS_LATER = NOW + dt.timedelta(days=3)


def at(moment: dt.datetime):  # type: ignore[no-untyped-def]
    return lambda: moment


@pytest.fixture
def positions(database) -> PostgresResumePositions:
    return PostgresResumePositions(database.app_url)


def requested(ledger, deadline_s: float = 60.0) -> str:
    """An InferenceRequested whose outcome never comes (its process died); returns its stream."""
    request_id = str(uuid.uuid4())
    stream = inference_stream(request_id)
    payload = InferenceRequested(request_id=request_id, provider="openai", model="gpt-test", deployment="primary",
                                 region="eu", api_key_id="key-1", stream=False,
                                 deadline_at=deadline_after(NOW, deadline_s)).payload()
    ledger.append([NewEvent(stream, "InferenceRequested", payload, tenant_id="acme")], {stream: 0})
    return stream


def completed(ledger) -> str:
    """An inference answered in one append, as a live gateway records it."""
    stream = requested(ledger)
    request_id = stream.removeprefix("inference-")
    outcome = InferenceCompleted(request_id=request_id, provider="openai", model="gpt-test", deployment="primary",
                                 region="eu", tokens_in=3, tokens_out=2, tokens_cached=0, tokens_reasoning=0,
                                 latency_us=1000, ttft_us=None, cost_micros=1, currency="USD",
                                 price_table_version="t").payload()
    ledger.append([NewEvent(stream, "InferenceCompleted", outcome, tenant_id="acme")], {stream: 1})
    return stream


def test_an_orphan_left_before_an_outage_longer_than_the_lookback_is_closed_after_it(ledger, positions):
    completed(ledger)
    orphan = requested(ledger)
    completed(ledger)
    before_the_outage = InferenceSweeper(ledger, clock=at(NOW), resume=positions)
    assert before_the_outage.sweep_once().closed_inferences == []  # still within its deadline
    assert before_the_outage.open_count == 1

    # Three days later, with a 24 h lookback: a sweeper without the saved position starts past the orphan...
    forgetful = InferenceSweeper(ledger, clock=at(THREE_DAYS_LATER), lookback_s=24 * 3600)
    assert forgetful.sweep_once().closed_inferences == [] and forgetful.open_count == 0
    # ...one that resumes reads from the orphan on, and closes it.
    resumed = InferenceSweeper(ledger, clock=at(THREE_DAYS_LATER), lookback_s=24 * 3600, resume=positions)
    assert resumed.sweep_once().closed_inferences == [orphan]
    [failed] = [e for e in ledger.read_stream(orphan) if e.type == "InferenceFailed"]
    assert orjson.loads(failed.payload)["reason"] == "gateway_interrupted"


def test_the_saved_position_is_the_oldest_open_stream_and_only_moves_forward(ledger, positions):
    completed(ledger)
    orphan = requested(ledger)
    completed(ledger)
    sweeper = InferenceSweeper(ledger, clock=at(NOW), resume=positions)
    sweeper.sweep_once()
    [opening] = ledger.read_stream(orphan)
    assert positions.load(InferenceSweeper.WORKER) == opening.position

    sweeper._clock = at(THREE_DAYS_LATER)
    assert sweeper.sweep_once().closed_inferences == [orphan]
    # nothing is open any more: the next position to read is saved, which is the close it just appended
    saved = positions.load(InferenceSweeper.WORKER)
    assert saved == ledger.head().size

    positions.advance(InferenceSweeper.WORKER, 1)  # a sweeper that lags behind cannot move it back
    assert positions.load(InferenceSweeper.WORKER) == saved


def test_a_saved_position_beyond_the_ledger_restarts_at_its_end(ledger, positions):
    """A ledger restored from an older backup ends before the saved position: what comes next is still read."""
    completed(ledger)
    positions.advance(InferenceSweeper.WORKER, ledger.head().size + 1000)
    sweeper = InferenceSweeper(ledger, clock=at(NOW), resume=positions)
    sweeper.sweep_once()
    assert positions.load(InferenceSweeper.WORKER) == ledger.head().size + 1  # the void position is gone
    orphan = requested(ledger)
    # a sweeper started later, before the ledger has grown past the void position, still sees the orphan
    later = InferenceSweeper(ledger, clock=at(THREE_DAYS_LATER), resume=positions)
    assert later.sweep_once().closed_inferences == [orphan]
    sweeper._clock = at(THREE_DAYS_LATER)
    assert sweeper.sweep_once().closed_inferences == []  # the one still running reads it closed


def test_without_a_store_the_sweeper_keeps_its_lookback(ledger):
    orphan = requested(ledger)
    sweeper = InferenceSweeper(ledger, clock=at(NOW + dt.timedelta(hours=1)))
    assert sweeper.sweep_once().closed_inferences == [orphan]
