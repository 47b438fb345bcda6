"""Closes what a dead process left open: inferences and NEXUS runs whose outcome will never come.

The gateway records `InferenceRequested` while the upstream call is in flight (application/gateway.py)
with a `deadline_at` (the request's timeout plus a grace); the orchestrator records one on
`OrchestrationRequested` (its longest possible run plus a grace). A live process always records the
outcome before then, so an inference stream still at its InferenceRequested past that deadline was
orphaned (the process was killed, the machine lost power), and the sweeper appends
`InferenceFailed(reason=gateway_interrupted)`; a run stream with no terminal event gets
`OrchestrationFailed(code=gateway_interrupted)`.

Process-agnostic and safe to run anywhere, any number of times: the sweeper follows the ledger in
position order (in memory: the open inferences and runs), and every close is an append with the
stream's expected version, so of two sweepers racing, or a sweeper racing a late live outcome, exactly
one append wins; the loser re-reads the stream and sees it closed.

Where it resumes after a restart (`ResumePositions`): after each sweep it saves the position of the
oldest stream it still holds open (or, with none open, the next position to read), so a restarted
sweeper, even days later, reads from there and closes what was open when it stopped. Without a saved
position (the first start, or no store given) it reads from the first entry recorded `lookback_s`
before now (found by bisection on positions): an orphan older than that is not seen.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from application.ports import Ledger, ResumePositions
from domain.entry import format_timestamp
from domain.inference import INFERENCE_STREAM_PREFIX, OUTCOMES, interrupted, parse_instant
from domain.ledger import ConcurrencyError, LedgerUnavailable, NewEvent, RecordedEvent
from domain.orchestration import RUN_STREAM_PREFIX, RUN_TERMINAL, run_interrupted

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Open:
    tenant_id: str
    deadline: dt.datetime
    version: int  # the stream's version as last seen
    opening: RecordedEvent  # InferenceRequested or OrchestrationRequested
    last_event_id: str
    inferences: int = 0  # runs: InferenceRequested events correlated with the run


def _opened(e: RecordedEvent) -> _Open | None:
    """An opening event with a deadline (events recorded before deadlines existed never stay open)."""
    deadline = orjson.loads(e.payload).get("deadline_at")
    if not isinstance(deadline, str):
        return None
    return _Open(e.tenant_id, parse_instant(deadline), e.stream_version, e, str(e.event_id))


@dataclass
class SweepReport:
    read: int = 0
    closed_inferences: list[str] = field(default_factory=list)  # stream ids
    closed_runs: list[str] = field(default_factory=list)
    lost_races: int = 0  # streams another writer closed first


class InferenceSweeper:
    WORKER = "inference-sweeper"  # its name in ResumePositions

    def __init__(self, ledger: Ledger, *, clock: Clock = _utc_now, lookback_s: float = 24 * 3600,
                 batch: int = 1000, resume: ResumePositions | None = None) -> None:
        self._ledger = ledger
        self._resume = resume
        self._saved: int | None = None  # the resume position saved last
        self._clock = clock
        self._lookback = dt.timedelta(seconds=lookback_s)
        self._batch = batch
        self._position: int | None = None  # next position to read
        self._inferences: dict[str, _Open] = {}
        self._runs: dict[str, _Open] = {}
        self._run_of: dict[str, str] = {}  # run id -> run stream, for counting a run's inferences

    # --- following the ledger -----------------------------------------------------------------------

    def _start_position(self) -> int:
        """The saved resume position, else the first position recorded at or after now - lookback
        (positions are in commit order)."""
        size = self._ledger.head().size
        if self._resume is not None and (saved := self._resume.load(self.WORKER)) is not None:
            if saved > size + 1:  # a ledger restored from an older backup ends before it: it is void
                log.warning("the sweeper's resume position %d is past the ledger's end %d; starting there",
                            saved, size)
                saved = size + 1
                self._resume.reset(self.WORKER, saved)
            self._saved = saved
            return saved
        since = self._clock() - self._lookback
        low, high = 1, size + 1
        while low < high:
            middle = (low + high) // 2
            [entry] = self._ledger.read(middle, 1)
            if parse_instant(entry.recorded_at) < since:
                low = middle + 1
            else:
                high = middle
        return low

    def _follow(self, report: SweepReport) -> None:
        if self._position is None:
            self._position = self._start_position()
        while batch := self._ledger.read(self._position, self._batch):
            for entry in batch:
                self._observe(entry)
            report.read += len(batch)
            self._position = batch[-1].position + 1
            if len(batch) < self._batch:
                break

    def _observe(self, e: RecordedEvent) -> None:
        stream = e.stream_id
        if stream.startswith(INFERENCE_STREAM_PREFIX):
            if e.type == "InferenceRequested":
                if (opened := _opened(e)) is not None:
                    self._inferences[stream] = opened
                run = self._run_of.get(orjson.loads(e.metadata).get("correlation_id") or "")
                if run is not None and run in self._runs:
                    self._runs[run].inferences += 1
            elif e.type in OUTCOMES:
                self._inferences.pop(stream, None)
        elif stream.startswith(RUN_STREAM_PREFIX):
            if e.type == "OrchestrationRequested":
                if (opened := _opened(e)) is not None:
                    self._runs[stream] = opened
                    self._run_of[orjson.loads(e.payload)["run_id"]] = stream
            elif e.type in RUN_TERMINAL:
                if self._runs.pop(stream, None) is not None:
                    self._run_of.pop(orjson.loads(e.payload).get("run_id"), None)
            elif stream in self._runs:
                opened = self._runs[stream]
                opened.version, opened.last_event_id = e.stream_version, str(e.event_id)

    # --- closing ------------------------------------------------------------------------------------

    def sweep_once(self) -> SweepReport:
        """Read what was recorded since the last call, then close every open stream past its deadline."""
        report = SweepReport()
        self._follow(report)
        now = self._clock()
        for stream, opened in list(self._inferences.items()):
            if opened.deadline <= now:
                payload = interrupted(orjson.loads(opened.opening.payload), now)
                if payload is not None:
                    self._close(stream, opened, "InferenceFailed", payload, report, report.closed_inferences)
        for stream, opened in list(self._runs.items()):
            if opened.deadline <= now:
                deadline = orjson.loads(opened.opening.payload)["deadline_at"]
                payload = {"run_id": orjson.loads(opened.opening.payload)["run_id"],
                           **run_interrupted(deadline, format_timestamp(now), opened.inferences)}
                self._close(stream, opened, "OrchestrationFailed", payload, report, report.closed_runs)
        self._save_resume_position()
        return report

    def _save_resume_position(self) -> None:
        """Everything before the oldest stream still open is done with: a restart may begin there."""
        if self._resume is None or self._position is None:
            return
        position = min((o.opening.position for o in (*self._inferences.values(), *self._runs.values())),
                       default=self._position)
        if self._saved is not None and position <= self._saved:
            return
        try:
            self._resume.advance(self.WORKER, position)
        except Exception:  # bookkeeping only: a restart would re-read more; sweeping goes on regardless
            log.warning("could not save the sweeper's resume position %d; will retry", position, exc_info=True)
            return
        self._saved = position

    def _close(self, stream: str, opened: _Open, event_type: str, payload: dict[str, Any], report: SweepReport,
               closed: list[str]) -> None:
        correlation = orjson.loads(opened.opening.metadata).get("correlation_id") or str(opened.opening.event_id)
        event = NewEvent(stream, event_type, payload, tenant_id=opened.tenant_id, event_id=uuid.uuid4(),
                         metadata={"correlation_id": correlation, "causation_id": opened.last_event_id})
        try:
            self._ledger.append([event], {stream: opened.version})
        except ConcurrencyError:
            # Someone wrote to the stream since we read it: another sweeper, or the live process after all.
            self._reconsider(stream, opened, report)
            return
        except LedgerUnavailable:
            log.warning("could not close %s now; will retry", stream)
            return
        log.warning("closed %s: %s (no outcome by its deadline)", stream, event_type)
        self._forget(stream)
        closed.append(stream)

    def _reconsider(self, stream: str, opened: _Open, report: SweepReport) -> None:
        events = self._ledger.read_stream(stream)
        if any(e.type in OUTCOMES or e.type in RUN_TERMINAL for e in events):
            report.lost_races += 1
            self._forget(stream)
        else:  # a run that moved on: try again next round at its new version
            opened.version, opened.last_event_id = events[-1].stream_version, str(events[-1].event_id)

    def _forget(self, stream: str) -> None:
        self._inferences.pop(stream, None)
        if (opened := self._runs.pop(stream, None)) is not None:
            self._run_of.pop(orjson.loads(opened.opening.payload).get("run_id"), None)

    @property
    def open_count(self) -> int:
        return len(self._inferences) + len(self._runs)

    async def run(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        """Sweep every `interval_s` until `stop` is set (a worker of api/workers.py)."""
        while not stop.is_set():
            await asyncio.to_thread(self.sweep_once)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
