"""Where projections live in PostgreSQL: versioned read-model schemas, checkpoints, the registry.

The interface the NATS consumer (and everything else) uses:

    store = ProjectionStore(app_url)              # libpq conninfo or URL of role nexus_app
    store.checkpoint(name) -> int                 # last applied ledger position (0: nothing yet)
    store.apply(projection, events) -> int        # ONE transaction: the events with position >
                                                  # checkpoint, in order, then the new checkpoint;
                                                  # returns it. Raises ProjectionGap when the first
                                                  # new event is not checkpoint + 1 (nothing applied),
                                                  # ProjectionFailed when a handler or the flush
                                                  # raised (nothing applied; the projection is then
                                                  # stopped and the error recorded), ProjectionStopped
                                                  # while stopped, ProjectionOutdated while the active
                                                  # read model was built by another code version.
    store.apply_many(projections, events) -> {name: checkpoint}
                                                  # the same for several projections in one
                                                  # transaction; a stopped one is skipped
    store.catch_up_from_ledger(projection(s), ledger, until=None, batch=5000) -> int
                                                  # apply ledger entries checkpoint+1 .. until (default
                                                  # the head) in batches; returns the checkpoint
    with store.reading(name) as conn: usage.timeseries(conn, tenant, ...)
                                                  # queries always run against the ACTIVE version
    store.resume(name); store.status(projections); store.rebuild(projection, ledger)

Exactly-once effects: the checkpoint row lives in the read model's own schema and is written in the
same transaction as the view update, so a crash can neither lose an effect nor double it, and events
at or below the checkpoint (NATS redeliveries) are skipped. Database connection errors (retryable)
propagate unchanged and stop nothing; a retry with the same events is always safe.

Versions: each projection's tables live in a schema rm_<name>_<n>. Row `projections.registry(name)`
names the active one. Appliers lock that row FOR NO KEY UPDATE, readers FOR KEY SHARE, and a rebuild's
swap FOR UPDATE, so appliers and the swap serialise, readers never block appliers, and the swap waits
for readers of the old version before it is dropped (projections/rebuild.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Connection, Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import URL

from application.ports import Ledger
from domain.ledger import RecordedEvent
from projections.applying import (
    CHECKPOINT_METADATA,
    READ_CHUNK,
    Folded,
    apply_events,
    checkpoint_table,
    chunked,
    fold,
    read_ahead,
    read_checkpoint,
    write_folded,
)
from projections.base import (
    Projection,
    ProjectionError,
    ProjectionFailed,
    ProjectionGap,
    ProjectionOutdated,
    ProjectionStopped,
)

__all__ = [
    "ProjectionError", "ProjectionFailed", "ProjectionGap", "ProjectionNotDeployed", "ProjectionOutdated",
    "ProjectionStatus", "ProjectionStopped", "ProjectionStore", "ScratchModel",
]

log = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ProjectionNotDeployed(ProjectionError):
    def __init__(self, name: str) -> None:
        super().__init__(f"projection {name} has no read model yet (nothing applied, never rebuilt)")
        self.name = name


def sqlalchemy_url(conninfo: str) -> URL:
    """A psycopg SQLAlchemy URL carrying every libpq parameter (including a Unix-socket host)."""
    params = {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    return URL.create("postgresql+psycopg", query=params)


def version_schema(name: str, generation: int) -> str:
    return f"rm_{name}_{generation}"


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    code_version: int
    active_schema: str | None
    active_version: int | None
    checkpoint: int
    head: int
    lag_events: int
    lag_seconds: float
    stopped: bool
    last_error: str | None
    last_error_at: dt.datetime | None


class ProjectionStore:
    def __init__(self, app_url: str, *, pool_size: int = 4) -> None:
        self._engine: Engine = create_engine(
            sqlalchemy_url(app_url), pool_size=pool_size, max_overflow=2, pool_pre_ping=True
        )
        self._deployed: set[str] = set()

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ProjectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the live read model --------------------------------------------------------------------

    def checkpoint(self, name: str) -> int:
        try:
            with self.reading(name) as conn:  # FOR KEY SHARE: a swap cannot drop the version mid-read
                return read_checkpoint(conn)
        except ProjectionNotDeployed:
            return 0

    def apply(self, projection: Projection[Any], events: Sequence[RecordedEvent]) -> int:
        return self.apply_many([projection], events)[projection.name]

    def apply_many(self, projections: Sequence[Projection[Any]], events: Sequence[RecordedEvent]) -> dict[str, int]:
        """Apply the same events to several projections in ONE transaction; returns each one's checkpoint.

        A stopped projection is skipped (it is absent from the result) while the others go on;
        ProjectionStopped is raised only when every one is stopped. A failure in any rolls back all of
        them and stops the one that failed, so the next call goes on without it.

        The commit does not wait for the WAL flush (synchronous_commit off): a read model is rebuilt
        from the ledger, and its checkpoint commits with its rows, so a database crash can only take
        back whole batches, effects and checkpoint together. The next apply then finds a gap, and the
        consumer catches up from the ledger (docs/projections.md, "Exactly-once effects").
        """
        for projection in projections:
            self.ensure_deployed(projection)
        schemas: dict[str, str] = {}
        try:
            with self._engine.begin() as conn:
                conn.execute(text("SET LOCAL synchronous_commit = off"))
                rows = {
                    row.name: row
                    for row in conn.execute(
                        text(
                            "SELECT name, active_schema, version, stopped, last_error FROM projections.registry"
                            " WHERE name = ANY(:names) ORDER BY name FOR NO KEY UPDATE"
                        ),
                        {"names": [p.name for p in projections]},
                    )
                }
                checkpoints: dict[str, int] = {}
                for projection in projections:
                    row = rows[projection.name]
                    if row.stopped:
                        continue
                    if row.version != projection.version:
                        raise ProjectionOutdated(projection.name, row.version, projection.version)
                    schemas[projection.name] = row.active_schema
                    conn.execution_options(schema_translate_map={None: row.active_schema})
                    checkpoints[projection.name] = apply_events(conn, projection, events)
                if not checkpoints:
                    first = rows[projections[0].name]
                    raise ProjectionStopped(first.name, first.last_error)
                return checkpoints
        except ProjectionFailed as failed:
            log.error("%s; projection stopped", failed, exc_info=failed.cause)
            self.record_failure(failed, schemas.get(failed.name, "?"), stop=True)
            raise

    def catch_up_from_ledger(
        self,
        projection: Projection[Any] | Sequence[Projection[Any]],
        ledger: Ledger,
        until: int | None = None,
        batch: int = 5000,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> int:
        """Apply ledger entries after the checkpoint up to `until` (default: the head now), batch by batch.

        Given several projections, each batch goes to all of them in one transaction, from the
        earliest of their checkpoints (each skips what it has); returns the earliest checkpoint.
        """
        projections = [projection] if isinstance(projection, Projection) else list(projection)
        # An empty apply also refuses a stopped or outdated projection up front.
        checkpoint = min(self.apply_many(projections, []).values())
        last = until if until is not None else ledger.head().size
        for chunk in chunked(ledger.iter_entries(checkpoint + 1, last), batch):
            checkpoint = min(self.apply_many(projections, chunk).values())
            if on_batch is not None:
                on_batch(checkpoint, last)
        return checkpoint

    @contextmanager
    def reading(self, name: str) -> Iterator[Connection]:
        """A connection whose read-model tables resolve to the active version, for one transaction.

        The registry row is held FOR KEY SHARE: appliers are not blocked, but a swap waits until this
        reader is done, so the version it reads cannot be dropped under it.
        """
        with self._engine.connect() as conn, conn.begin():
            schema = conn.execute(
                text("SELECT active_schema FROM projections.registry WHERE name = :n FOR KEY SHARE"), {"n": name}
            ).scalar_one_or_none()
            if schema is None:
                raise ProjectionNotDeployed(name)
            conn.execution_options(schema_translate_map={None: schema})
            yield conn

    def resume(self, name: str) -> None:
        """Clear a stopped projection after its cause was fixed; the next apply retries the same event."""
        with self._engine.begin() as conn:
            conn.execute(text("UPDATE projections.registry SET stopped = false WHERE name = :n"), {"n": name})

    def status(self, projections: Iterable[Projection[Any]]) -> list[ProjectionStatus]:
        found = []
        with self._engine.connect() as conn:
            head = conn.execute(text("SELECT coalesce(max(position), 0) FROM ledger.events")).scalar_one()
            for projection in projections:
                row = conn.execute(
                    text(
                        "SELECT active_schema, version, stopped, last_error, last_error_at FROM projections.registry"
                        " WHERE name = :n FOR KEY SHARE"  # as a reader: no swap drops the version meanwhile
                    ),
                    {"n": projection.name},
                ).one_or_none()
                checkpoint = self._checkpoint_in(conn, row.active_schema) if row else 0
                lag_seconds = 0.0
                if head > checkpoint:
                    # Lag in time is the age of the oldest event the read model has not seen yet.
                    lag_seconds = float(
                        conn.execute(
                            text("SELECT extract(epoch FROM now() - recorded_at) FROM ledger.events WHERE position = :p"),
                            {"p": checkpoint + 1},
                        ).scalar_one()
                    )
                found.append(
                    ProjectionStatus(
                        name=projection.name,
                        code_version=projection.version,
                        active_schema=row.active_schema if row else None,
                        active_version=row.version if row else None,
                        checkpoint=checkpoint,
                        head=head,
                        lag_events=head - checkpoint,
                        lag_seconds=max(0.0, lag_seconds),
                        stopped=bool(row.stopped) if row else False,
                        last_error=row.last_error if row else None,
                        last_error_at=row.last_error_at if row else None,
                    )
                )
            conn.rollback()
        return found

    def rebuild(self, projection: Projection[Any], ledger: Ledger, **kwargs: Any) -> Any:
        """Replay the ledger into a new version and swap it in; see projections/rebuild.py."""
        from projections.rebuild import rebuild

        return rebuild(self, projection, ledger, **kwargs)

    # --- versions, scratch models, failures ------------------------------------------------------

    def ensure_deployed(self, projection: Projection[Any]) -> None:
        """Create the first version of a projection's read model and register it, once."""
        if projection.name in self._deployed:
            return
        with self._engine.begin() as conn:
            self.lock_name(conn, projection.name)
            exists = conn.execute(
                text("SELECT 1 FROM projections.registry WHERE name = :n"), {"n": projection.name}
            ).scalar_one_or_none()
            if not exists:
                schema = self.new_schema_name(conn, projection.name)
                self.create_model(conn, projection, schema)
                conn.execute(
                    text("INSERT INTO projections.registry (name, active_schema, version) VALUES (:n, :s, :v)"),
                    {"n": projection.name, "s": schema, "v": projection.version},
                )
                log.info("projection %s deployed in schema %s", projection.name, schema)
        self._deployed.add(projection.name)

    @staticmethod
    def lock_name(conn: Connection, name: str) -> None:
        """Serialise registration of one projection name (first deployment against a rebuild's swap)."""
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('nexus.projection.' || :n))"), {"n": name})

    @staticmethod
    def new_schema_name(conn: Connection, name: str) -> str:
        generation = conn.execute(text("SELECT nextval('projections.schema_generation')")).scalar_one()
        return version_schema(name, generation)

    @staticmethod
    def create_model(
        conn: Connection, projection: Projection[Any], schema: str, start: int = 0, *, unlogged: bool = False
    ) -> None:
        """A schema holding the projection's tables and its checkpoint row, inside the caller's transaction.

        `unlogged` skips the write-ahead log (about 3x faster bulk upserts here) for a model that is
        rebuilt (made logged before it goes live, see `make_logged`) or thrown away (scratch): a crash
        loses such a model, and with it nothing that the ledger cannot give back.
        """
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"not a schema name we create: {schema!r}")
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        translated = conn.execution_options(schema_translate_map={None: schema})
        projection.metadata.create_all(translated)
        CHECKPOINT_METADATA.create_all(translated)
        if unlogged:
            for name in _table_names(projection):
                conn.execute(text(f'ALTER TABLE "{schema}"."{name}" SET UNLOGGED'))
        translated.execute(insert(checkpoint_table).values(id=1, position=start, updated_at=func.now()))
        conn.execution_options(schema_translate_map={})

    @staticmethod
    def make_logged(conn: Connection, projection: Projection[Any], schema: str) -> None:
        """Make a rebuilt model crash-safe before it goes live (rewrites each table once into the WAL)."""
        for name in _table_names(projection):
            conn.execute(text(f'ALTER TABLE "{schema}"."{name}" SET LOGGED'))

    @staticmethod
    def drop_model(conn: Connection, schema: str) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"not a schema name we create: {schema!r}")
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    def apply_to(self, projection: Projection[Any], schema: str, events: Sequence[RecordedEvent]) -> int:
        """Apply to a read model that is not (yet) active, in its own transaction; no registry involved."""
        with self._engine.begin() as conn:
            conn.execution_options(schema_translate_map={None: schema})
            return apply_events(conn, projection, events)

    def fill(
        self,
        projection: Projection[Any],
        schema: str,
        events: Iterable[RecordedEvent],
        checkpoint: int,
        batch: int = 5000,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Apply a long run of events to a model only this caller writes (a rebuild's or a scratch one).

        A pipeline of three: a reader thread fetches events in chunks, this thread folds them into
        batch k+1, and a writer thread flushes and commits batch k, so Python's work and the
        database's overlap. Each batch (`batch` events) is one transaction with its checkpoint,
        committed in order. Big batches pay off here: a batch's rows are aggregates, so its memory
        grows with the keys it touches, not with its events, and every hour and day row it touches
        is written once per batch.
        """

        def commit(folded: Folded) -> int:
            with self._engine.begin() as conn:
                conn.execution_options(schema_translate_map={None: schema})
                current = read_checkpoint(conn)
                if current != folded.after:  # another writer: this model was not ours alone
                    raise ProjectionGap(projection.name, current + 1, folded.after + 1)
                return write_folded(conn, projection, folded)

        def committed(pending: Future[int] | None) -> None:
            if pending is not None:
                done = pending.result()
                if on_batch is not None:
                    on_batch(done)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fill-{projection.name}") as writer:
            pending: Future[int] | None = None
            folded: Folded | None = None
            for chunk in read_ahead(events, min(batch, READ_CHUNK)):
                folded = fold(projection, chunk, checkpoint, into=folded)
                if folded.last - folded.after < batch:
                    continue
                committed(pending)
                pending = writer.submit(commit, folded)
                checkpoint, folded = folded.last, None
            if folded is not None and folded.last > folded.after:
                committed(pending)
                pending = writer.submit(commit, folded)
                checkpoint = folded.last
            committed(pending)
        return checkpoint

    @contextmanager
    def model(self, schema: str) -> Iterator[Connection]:
        """A connection translated to a given read-model schema (scratch or building versions)."""
        with self._engine.connect() as conn, conn.begin():
            conn.execution_options(schema_translate_map={None: schema})
            yield conn

    @contextmanager
    def scratch(self, projection: Projection[Any], start: int = 0) -> Iterator[ScratchModel]:
        """A throwaway read model (replay, analytics, tests), dropped on exit whatever happens."""
        schema = f"scratch_{projection.name}_{uuid.uuid4().hex[:8]}"[:63]
        with self._engine.begin() as conn:
            self.create_model(conn, projection, schema, start, unlogged=True)
        try:
            yield ScratchModel(self, projection, schema)
        finally:
            with self._engine.begin() as conn:
                self.drop_model(conn, schema)

    def record_failure(self, failed: ProjectionFailed, schema: str, *, stop: bool) -> None:
        detail = "".join(traceback.format_exception(failed.cause))
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO projections.errors (name, schema_name, position, event_id, event_type, error, detail)"
                    " VALUES (:n, :s, :p, :e, :t, :err, :d)"
                ),
                {
                    "n": failed.name, "s": schema, "p": failed.position, "e": failed.event_id,
                    "t": failed.event_type, "err": str(failed), "d": detail,
                },
            )
            if stop:
                conn.execute(
                    text(
                        "UPDATE projections.registry SET stopped = true, last_error = :err, last_error_at = now(),"
                        " last_error_position = :p WHERE name = :n"
                    ),
                    {"n": failed.name, "err": str(failed), "p": failed.position},
                )

    def errors(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT at, schema_name, position, event_id, event_type, error FROM projections.errors"
                    " WHERE name = :n ORDER BY at DESC, id DESC LIMIT :l"
                ),
                {"n": name, "l": limit},
            ).mappings()
            return [dict(r) for r in rows]

    @staticmethod
    def _checkpoint_in(conn: Connection, schema: str) -> int:
        return conn.execute(
            select(checkpoint_table.c.position).where(checkpoint_table.c.id == 1),
            execution_options={"schema_translate_map": {None: schema}},
        ).scalar_one()


def _table_names(projection: Projection[Any]) -> list[str]:
    return [table.name for table in projection.metadata.sorted_tables] + [checkpoint_table.name]


@dataclass
class ScratchModel:
    """A read model in a scratch schema: apply events to it, query it, then let it be dropped."""

    store: ProjectionStore
    projection: Projection[Any]
    schema: str

    def apply(self, events: Sequence[RecordedEvent]) -> int:
        return self.store.apply_to(self.projection, self.schema, events)

    def fill_from_ledger(
        self, ledger: Ledger, first: int, last: int, batch: int = 5000, on_batch: Callable[[int, int], None] | None = None
    ) -> int:
        progress = None if on_batch is None else (lambda checkpoint: on_batch(checkpoint, last))
        return self.store.fill(self.projection, self.schema, ledger.iter_entries(first, last), first - 1, batch, progress)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.store.model(self.schema) as conn:
            yield conn
