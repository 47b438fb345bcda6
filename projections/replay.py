"""Replay-based analytics: run any projection over a slice of history into a scratch schema.

The slice is given in time and mapped to ledger positions through the recorded_at index: from the
first event recorded at or after `start` to the last recorded before `end`. Positions are assigned
under the ledger's append lock at commit time, so recorded_at does not decrease along positions
(for writers sharing one clock), which makes the slice a contiguous range of positions.
The scratch schema is dropped when the replay ends, whatever happens.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from application.ports import Ledger
from projections.base import Projection
from projections.store import ProjectionStore


@dataclass(frozen=True)
class ReplayResult:
    projection: str
    first_position: int | None
    last_position: int | None
    rows: list[dict[str, Any]]

    @property
    def events(self) -> int:
        if self.first_position is None or self.last_position is None:
            return 0
        return self.last_position - self.first_position + 1


def load_projection(spec: str, params: Mapping[str, str] | None = None) -> Projection[Any]:
    """A projection from a module: `usage` means projections.usage; a dotted path is imported as is.

    The module must define `create(**params) -> Projection`.
    """
    module_name = spec if "." in spec else f"projections.{spec}"
    module = importlib.import_module(module_name)
    create = getattr(module, "create", None)
    if create is None:
        raise TypeError(f"module {module_name} has no create(**params) -> Projection")
    projection = create(**dict(params or {}))
    if not isinstance(projection, Projection):
        raise TypeError(f"{module_name}.create() returned {projection!r}, not a Projection")
    return projection


def parse_instant(value: str) -> dt.datetime:
    """RFC 3339 ('2026-11-01T12:00:00Z', offsets allowed) or a date ('2026-11-01' = midnight UTC)."""
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an RFC 3339 time or a YYYY-MM-DD date: {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: give Z or an offset")
    return moment


def positions_between(store: ProjectionStore, start: dt.datetime, end: dt.datetime) -> tuple[int, int] | None:
    """First and last ledger position recorded in [start, end), via the recorded_at index; None if empty."""
    with store.engine.connect() as conn:
        first = conn.execute(
            text("SELECT position FROM ledger.events WHERE recorded_at >= :t ORDER BY recorded_at, position LIMIT 1"),
            {"t": start},
        ).scalar_one_or_none()
        last = conn.execute(
            text(
                "SELECT position FROM ledger.events WHERE recorded_at < :t"
                " ORDER BY recorded_at DESC, position DESC LIMIT 1"
            ),
            {"t": end},
        ).scalar_one_or_none()
    if first is None or last is None or first > last:
        return None
    return first, last


def replay(
    store: ProjectionStore,
    ledger: Ledger,
    projection: Projection[Any],
    start: dt.datetime,
    end: dt.datetime,
    *,
    batch: int = 100_000,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """The projection's report over the events recorded in [start, end), computed in a scratch schema.

    `on_progress(events done, events in the slice)` is called after each batch.
    """
    if end <= start:
        raise ValueError(f"the slice is empty: end {end.isoformat()} is not after start {start.isoformat()}")
    span = positions_between(store, start, end)
    first, last = span if span else (None, None)
    with store.scratch(projection, start=(first - 1) if first else 0) as model:
        if first is not None and last is not None:
            progress = None
            if on_progress is not None:
                progress = lambda done, _last: on_progress(done - first + 1, last - first + 1)  # noqa: E731
            model.fill_from_ledger(ledger, first, last, batch, progress)
        with model.reading() as conn:
            rows = projection.report(conn)
    return ReplayResult(projection.name, first, last, rows)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def export(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows as JSON (a list of objects) or CSV (a header of the first row's keys), by extension."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    elif suffix == ".csv":
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _plain(v) for k, v in row.items()})
    else:
        raise ValueError(f"export to .json or .csv, not {path.name!r}")
