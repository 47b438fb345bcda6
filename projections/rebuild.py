"""Rebuild: replay the ledger (PostgreSQL, by position) into a new read-model version, then swap it in.

1. Under a session advisory lock (one rebuild per projection at a time), drop versions left behind by
   a crashed rebuild and create rm_<name>_<n> with checkpoint 0, UNLOGGED (no write-ahead log: bulk
   upserts are about 3x faster, and a crash mid-rebuild loses only the half-built version).
2. Fill it from the ledger in batches, one transaction each, while the old version keeps serving
   reads and live appliers keep updating it. Repeat until at most SWAP_TAIL events remain, then
   make it LOGGED (one sequential rewrite into the WAL), so it is crash-safe before it goes live.
3. Swap in one transaction: lock the registry row FOR UPDATE (waits for live appliers and for readers
   of the old version, then holds them off), apply the last few events up to the ledger head, point
   the registry at the new schema and clear any stopped state. Live appliers then continue on the new
   version: their checkpoint there is >= theirs on the old one, so nothing is skipped or doubled.
4. Drop the old version.
A failed rebuild drops its half-built version and records the error; the old version serves on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from application.ports import Ledger
from projections.applying import apply_events
from projections.base import Projection, ProjectionError, ProjectionFailed
from projections.store import ProjectionStore

log = logging.getLogger(__name__)

SWAP_TAIL = 1000
"""Filling stops when at most this many events remain; the swap applies them under the registry lock,
which holds live appliers and readers off for that long only."""

Progress = Callable[[int, int], None]
"""Called after each batch with (checkpoint, target position)."""


class RebuildRunning(ProjectionError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a rebuild of projection {name} is already running")
        self.name = name


@dataclass(frozen=True)
class RebuildResult:
    name: str
    schema: str
    replaced: str | None
    checkpoint: int
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def rebuild(
    store: ProjectionStore,
    projection: Projection[Any],
    ledger: Ledger,
    *,
    batch: int = 100_000,
    on_progress: Progress | None = None,
    before_swap: Callable[[str], None] | None = None,
    swap_tail: int = SWAP_TAIL,
) -> RebuildResult:
    """Build a fresh version of `projection` from the whole ledger and make it the active one."""
    started = time.perf_counter()
    name = projection.name
    with store.engine.connect() as lock_conn:
        got = lock_conn.execute(
            text("SELECT pg_try_advisory_lock(hashtext('nexus.rebuild.' || :n))"), {"n": name}
        ).scalar_one()
        lock_conn.commit()
        if not got:
            raise RebuildRunning(name)
        try:
            _drop_leftovers(store, name)
            with store.engine.begin() as conn:
                schema = store.new_schema_name(conn, name)
                store.create_model(conn, projection, schema, unlogged=True)
            log.info("rebuilding projection %s into %s", name, schema)
            try:
                checkpoint = _fill(store, projection, schema, ledger, batch, swap_tail, on_progress)
                with store.engine.begin() as conn:
                    store.make_logged(conn, projection, schema)
                if before_swap is not None:
                    before_swap(schema)
                checkpoint, replaced = _swap(store, projection, schema, ledger, checkpoint, on_progress)
            except BaseException as exc:
                if isinstance(exc, ProjectionFailed):
                    store.record_failure(exc, schema, stop=False)
                with store.engine.begin() as conn:
                    store.drop_model(conn, schema)
                raise
            if replaced is not None:
                with store.engine.begin() as conn:
                    store.drop_model(conn, replaced)
        finally:
            lock_conn.execute(text("SELECT pg_advisory_unlock(hashtext('nexus.rebuild.' || :n))"), {"n": name})
            lock_conn.commit()
    seconds = time.perf_counter() - started
    log.info("projection %s rebuilt into %s at position %d in %.1f s", name, schema, checkpoint, seconds)
    return RebuildResult(name, schema, replaced, checkpoint, checkpoint, seconds)


def _fill(
    store: ProjectionStore,
    projection: Projection[Any],
    schema: str,
    ledger: Ledger,
    batch: int,
    swap_tail: int,
    on_progress: Progress | None,
) -> int:
    """Catch the new version up while everything else carries on, until only a short tail is left."""
    checkpoint = 0
    while True:
        target = ledger.head().size
        if target - checkpoint <= swap_tail:
            return checkpoint
        progress = None if on_progress is None else (lambda done, target=target: on_progress(done, target))
        checkpoint = store.fill(projection, schema, ledger.iter_entries(checkpoint + 1, target), checkpoint, batch, progress)


def _swap(
    store: ProjectionStore,
    projection: Projection[Any],
    schema: str,
    ledger: Ledger,
    checkpoint: int,
    on_progress: Progress | None,
) -> tuple[int, str | None]:
    with store.engine.begin() as conn:
        store.lock_name(conn, projection.name)  # against a concurrent first deployment
        current = conn.execute(
            text("SELECT active_schema FROM projections.registry WHERE name = :n FOR UPDATE"), {"n": projection.name}
        ).scalar_one_or_none()
        # Under the lock no live applier moves, so the head read now bounds everything they can have
        # applied: catching up to it leaves the new version at or ahead of the old one.
        target = ledger.head().size
        conn.execution_options(schema_translate_map={None: schema})
        tail = list(ledger.iter_entries(checkpoint + 1, target)) if target > checkpoint else []
        checkpoint = apply_events(conn, projection, tail) if tail else checkpoint
        if current is None:
            conn.execute(
                text("INSERT INTO projections.registry (name, active_schema, version) VALUES (:n, :s, :v)"),
                {"n": projection.name, "s": schema, "v": projection.version},
            )
        else:
            conn.execute(
                text(
                    "UPDATE projections.registry SET active_schema = :s, version = :v, swapped_at = now(),"
                    " stopped = false, last_error = NULL, last_error_at = NULL, last_error_position = NULL"
                    " WHERE name = :n"
                ),
                {"n": projection.name, "s": schema, "v": projection.version},
            )
    if on_progress is not None:
        on_progress(checkpoint, target)
    return checkpoint, current


def _drop_leftovers(store: ProjectionStore, name: str) -> None:
    """Versions of this projection that are not active are debris of an interrupted rebuild."""
    pattern = re.compile(rf"^rm_{re.escape(name)}_[0-9]+$")
    with store.engine.begin() as conn:
        active = conn.execute(
            text("SELECT active_schema FROM projections.registry WHERE name = :n"), {"n": name}
        ).scalar_one_or_none()
        schemas = conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rm\\_%' AND pg_has_role(nspowner, 'USAGE')")
        ).scalars()
        for schema in schemas:
            if pattern.match(schema) and schema != active:
                log.warning("dropping %s, left behind by an interrupted rebuild of %s", schema, name)
                store.drop_model(conn, schema)
