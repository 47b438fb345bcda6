"""How events become read-model rows: fold in memory, flush, move the checkpoint, in one transaction.

Nothing here knows the registry or which version is active: callers hand in a connection translated
(SQLAlchemy schema_translate_map) to the read-model schema and own the transaction. The checkpoint is
a one-row table inside that same schema, eventsourcing's tracking row: written in the transaction
that writes the view, so effects and checkpoint are recorded together or not at all.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    MetaData,
    Select,
    SmallInteger,
    Table,
    Update,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.exc import InterfaceError, OperationalError

from domain.ledger import RecordedEvent
from projections import bulk
from projections.base import EVERY, Projection, ProjectionFailed, ProjectionGap

CHECKPOINT_METADATA = MetaData()
checkpoint_table = Table(
    "_checkpoint",
    CHECKPOINT_METADATA,
    Column("id", SmallInteger, primary_key=True),  # always 1: one tracking row per read-model schema
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

READ_CHUNK = 5000
"""Events the read-ahead thread hands over at a time (fill batches may be larger: they are folded)."""

def chunked(events: Iterable[RecordedEvent], size: int) -> Iterator[list[RecordedEvent]]:
    iterator = iter(events)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def read_ahead(events: Iterable[RecordedEvent], size: int, depth: int = 2) -> Iterator[list[RecordedEvent]]:
    """Chunks of `events` read by a thread of their own, up to `depth` chunks ahead of the consumer.

    While the consumer folds one chunk, the database produces the next (in its own process, on the
    other core). If the consumer stops early, the reader stops too and closes the source.
    """
    chunks: queue.Queue[list[RecordedEvent] | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: list[RecordedEvent] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        source = iter(events)
        try:
            for chunk in chunked(source, size):
                if not offer(chunk):
                    return
            offer(None)
        except BaseException as exc:  # handed to the consumer, raised there
            offer(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="ledger-read-ahead", daemon=True)
    reader.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=30)


@dataclass
class Folded:
    """A batch of events folded in memory, not yet written: it moves the checkpoint from `after` to `last`."""

    batch: Any
    after: int
    last: int


def read_checkpoint(conn: Connection) -> int:
    def build() -> Select[Any]:
        return select(checkpoint_table.c.position).where(checkpoint_table.c.id == 1)

    [position] = bulk.execute_once_compiled(conn, "read checkpoint", build).fetchone()
    return int(position)


def _move_checkpoint(conn: Connection, position: int) -> None:
    def build() -> Update:
        return (update(checkpoint_table).where(checkpoint_table.c.id == 1)
                .values(position=bindparam("position"), updated_at=func.now()))

    bulk.execute_once_compiled(conn, "move checkpoint", build, {"position": position})


def fold(
    projection: Projection[Any], events: Iterable[RecordedEvent], checkpoint: int, into: Folded | None = None
) -> Folded:
    """Run the handlers over the events that continue from `checkpoint` (or from `into`), in memory only."""
    handlers = dict(projection.handlers())
    every = handlers.pop(EVERY, None)
    batch = projection.new_batch() if into is None else into.batch
    last = checkpoint if into is None else into.last
    for event in events:
        position = event.position
        if position <= last:
            continue  # already applied (a redelivery): skipping it is what makes redelivery harmless
        if position != last + 1:
            raise ProjectionGap(projection.name, last + 1, position)
        handler = handlers.get(event.type)
        if handler is not None or every is not None:
            try:
                if every is not None:
                    every(batch, event)
                if handler is not None:
                    handler(batch, event, orjson.loads(event.payload))
            except Exception as exc:
                raise ProjectionFailed(projection.name, exc, position, event.event_id, event.type) from exc
        last = position
    return Folded(batch, checkpoint if into is None else into.after, last)


def write_folded(conn: Connection, projection: Projection[Any], folded: Folded) -> int:
    """Flush a folded batch and move the checkpoint, in the caller's transaction."""
    if folded.last == folded.after:
        return folded.after
    try:
        projection.flush(conn, folded.batch)
    except (OperationalError, InterfaceError):
        raise  # the connection, not the projection, failed: retryable, stops nothing
    except Exception as exc:
        raise ProjectionFailed(projection.name, exc) from exc
    _move_checkpoint(conn, folded.last)
    return folded.last


def apply_events(conn: Connection, projection: Projection[Any], events: Sequence[RecordedEvent]) -> int:
    """Apply to the schema `conn` is translated to, inside the caller's transaction; returns the checkpoint.

    Handlers fold events into an in-memory batch, one flush writes it, then the checkpoint moves:
    all in the caller's transaction, so either all of it is recorded or none.
    """
    return write_folded(conn, projection, fold(projection, events, read_checkpoint(conn)))
