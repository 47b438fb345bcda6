"""What a projection is: read-model tables, one handler per event type, a batch it flushes in one go.

A projection module defines a `Projection` subclass and a `create(**params)` factory:

    class Usage(Projection[UsageBatch]):
        name = "usage"
        version = 1                 # bump when tables or meaning change: the next rebuild is required
        metadata = METADATA         # SQLAlchemy Core tables WITHOUT a schema; the store maps them
                                    # into rm_usage_<n> (or a scratch schema) at execution time
        def new_batch(self) -> UsageBatch: ...
        @on("InferenceCompleted")
        def completed(self, batch, event, payload) -> None: ...   # aggregate in memory only
        def flush(self, conn, batch) -> None: ...                   # few multi-row statements

Handlers never touch the database: they fold events into the batch, and `flush` writes the batch with
a handful of multi-row upserts. The store wraps handlers, flush and the checkpoint in one transaction
(projections/store.py), so a projection module never sees checkpoints or transactions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Connection, MetaData

from domain.ledger import RecordedEvent

B = TypeVar("B")
F = TypeVar("F", bound=Callable[..., None])

Handler = Callable[[Any, RecordedEvent, dict[str, Any]], None]
EveryHandler = Callable[[Any, RecordedEvent], None]

EVERY = "*"
"""Handler key of a projection that indexes every event, whatever its type (without its payload)."""


def on(event_type: str) -> Callable[[F], F]:
    """Mark a method as the handler of one event type: (self, batch, event, payload) -> None."""

    def mark(method: F) -> F:
        method.__handles__ = event_type  # type: ignore[attr-defined]
        return method

    return mark


def on_every_event(method: F) -> F:
    """Mark a method that sees every event (before its type's handler): (self, batch, event) -> None."""
    method.__handles__ = EVERY  # type: ignore[attr-defined]
    return method


class Projection(abc.ABC, Generic[B]):
    name: ClassVar[str]
    version: ClassVar[int] = 1
    metadata: ClassVar[MetaData]
    _handler_names: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                event_type = getattr(value, "__handles__", None)
                if event_type is not None:
                    found[event_type] = attr
        cls._handler_names = found

    def handlers(self) -> Mapping[str, Any]:
        """Event type (or EVERY) -> bound handler. Types without one only advance the checkpoint."""
        return {event_type: getattr(self, attr) for event_type, attr in self._handler_names.items()}

    @abc.abstractmethod
    def new_batch(self) -> B:
        """An empty in-memory aggregate for one transaction's worth of events."""

    @abc.abstractmethod
    def flush(self, conn: Connection, batch: B) -> None:
        """Write the batch's effects with a few multi-row statements (additive upserts)."""

    def report(self, conn: Connection) -> list[dict[str, Any]]:
        """The read model as rows, for `nexus replay` to print or export."""
        raise NotImplementedError(f"projection {self.name} has no report")

    def __repr__(self) -> str:
        return f"<projection {self.name} v{self.version}>"


class ProjectionError(Exception):
    """Base of the errors a projection store raises."""


class ProjectionGap(ProjectionError):
    """Events were offered that do not continue from the checkpoint: applying them would lose some."""

    def __init__(self, name: str, expected: int, found: int) -> None:
        super().__init__(f"projection {name}: expected position {expected}, found {found} (a gap: nothing applied)")
        self.name = name
        self.expected = expected
        self.found = found


class ProjectionFailed(ProjectionError):
    """A handler or the flush raised: nothing of the batch was written, the projection is stopped."""

    def __init__(
        self,
        name: str,
        cause: BaseException,
        position: int | None = None,
        event_id: Any = None,
        event_type: str | None = None,
    ) -> None:
        where = f"at position {position} ({event_type} {event_id})" if position is not None else "flushing a batch"
        super().__init__(f"projection {name} failed {where}: {type(cause).__name__}: {cause}")
        self.name = name
        self.cause = cause
        self.position = position
        self.event_id = event_id
        self.event_type = event_type


class ProjectionStopped(ProjectionError):
    """The projection failed earlier and stays stopped until `resume` (or a rebuild) clears it."""

    def __init__(self, name: str, last_error: str | None) -> None:
        super().__init__(
            f"projection {name} is stopped after a failure: {last_error}"
            f" (fix the cause, then `nexus projections resume {name}` or `rebuild {name}`)"
        )
        self.name = name
        self.last_error = last_error


class ProjectionOutdated(ProjectionError):
    """The active read model was built by another version of the projection's code."""

    def __init__(self, name: str, active_version: int, code_version: int) -> None:
        super().__init__(
            f"projection {name}: the active read model is version {active_version}, the code is version"
            f" {code_version} (run `nexus projections rebuild {name}`)"
        )
        self.name = name
        self.active_version = active_version
        self.code_version = code_version
