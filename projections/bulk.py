"""Write a batch's rows to a read-model table with two statements, whatever the batch size.

Rows go by COPY (text format) into a session-local staging table, then one
`INSERT INTO table SELECT * FROM stage ON CONFLICT (primary key) DO UPDATE SET col = merge(...)`
folds them in, all inside the caller's transaction. Measured here, that is 3-4x faster than
executemany, a multi-row VALUES or an unnest() insert: no per-row statement work, and array columns
(the latency histograms) travel as ready-made literals ('{0,0,3}') instead of going through the
driver's per-element array dumping (which dominated both the text and the binary protocol). The COPY
needs the psycopg connection underneath SQLAlchemy's; everything else stays SQLAlchemy Core, so
schema translation (rm_<name>_<n>) applies.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Column, Connection, Executable, MetaData, Select, Table, func, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.sql.elements import ClauseElement

Merge = Callable[[Column[Any], Any], Any]
"""How a stored row's column combines with the incoming value: (stored, excluded) -> SQL expression."""


def add(stored: Column[Any], new: Any) -> Any:
    return stored + new


def greatest(stored: Column[Any], new: Any) -> Any:
    return func.greatest(stored, new)


def hist_add(stored: Column[Any], new: Any) -> Any:
    return func.projections.hist_add(stored, new)


def _target_schema(conn: Connection) -> str:
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(None)
    if not schema:
        raise RuntimeError("bulk writes need a connection translated to a read-model schema")
    return schema


def int_array(values: Sequence[int]) -> str:
    """A PostgreSQL array literal of integers: COPY reads it as the column's type."""
    return "{" + ",".join(map(str, values)) + "}"


_STAGES: dict[tuple[str, Table], Table] = {}
_CACHE_MAX = 2048
"""Entries kept in each per-schema cache below. Every rebuild makes a new schema (rm_<name>_<n>) and
the old one's entries would otherwise stay for the process's life: past the bound they are all
forgotten, and the few in use are built again on their next batch."""


def _stage_table(stage_name: str, table: Table) -> Table:
    """The staging table's SQLAlchemy object, one per name and target table, for the process's life.

    SQLAlchemy keys its compiled-statement cache on the Table objects a statement names: a fresh
    Table per batch made every INSERT ... SELECT FROM stage compile again, which was two thirds of
    a small batch's cost (profiled with py-spy under ops/bench/stream.py).
    """
    key = (stage_name, table)
    stage = _STAGES.get(key)
    if stage is None:
        if len(_STAGES) >= _CACHE_MAX:
            _STAGES.clear()
        stage = Table(stage_name, MetaData(), *(Column(c.name, c.type) for c in table.columns), schema="pg_temp")
        _STAGES[key] = stage
    return stage


@contextmanager
def staged(conn: Connection, table: Table, rows: Sequence[Sequence[Any]]) -> Iterator[Table]:
    """COPY rows (tuples in `table`'s column order) into a session-local staging table shaped like it.

    Yields the staging table for statements that fold it into read-model tables; it is emptied in
    the same transaction afterwards, so a rollback restores it empty and a second use in one
    transaction cannot fold rows in twice (TRUNCATE, because temp tables get no autovacuum).
    """
    schema = _target_schema(conn)
    stage_name = f"_stage_{schema}_{table.name}"[:63]
    # Per version, because a session may write to an old and a new version of one table. The
    # statements go straight to the driver: through SQLAlchemy each cost more Python than its work.
    raw = conn.connection.driver_connection
    raw.execute(f'CREATE TEMP TABLE IF NOT EXISTS "{stage_name}" (LIKE "{schema}"."{table.name}")')  # type: ignore[union-attr]
    stage = _stage_table(stage_name, table)
    names = [c.name for c in table.columns]
    arrays = [i for i, c in enumerate(table.columns) if isinstance(c.type, ARRAY)]
    with raw.cursor().copy(  # type: ignore[union-attr]
        f'COPY pg_temp."{stage_name}" ({", ".join(names)}) FROM STDIN'
    ) as copy:
        if arrays:
            for row in rows:
                row = list(row)
                for i in arrays:
                    if not isinstance(row[i], str):
                        row[i] = int_array(row[i])
                copy.write_row(row)
        else:
            for row in rows:
                copy.write_row(row)
    yield stage
    raw.execute(f'TRUNCATE pg_temp."{stage_name}"')  # type: ignore[union-attr]


_SQL: dict[tuple[str, Hashable], tuple[str, dict[str, Any]]] = {}


def execute_once_compiled(
    conn: Connection, key: Hashable, build: Callable[[], Executable], params: Mapping[str, Any] | None = None
) -> Any:
    """Execute a statement whose SQL depends only on `key` and the read-model schema; it is built once.

    SQLAlchemy builds a statement, computes its cache key and looks its compiled form up at every
    execution. For the few rows of a live batch that was a fifth of the workers' Python time (py-spy
    under ops/bench/workers.py). Here the SQL text, with the schema written in, is kept per schema
    and key and goes straight to the driver, in the caller's transaction.
    """
    schema = _target_schema(conn)
    cached = _SQL.get((schema, key))
    if cached is None:
        statement = build()
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=conn.dialect, schema_translate_map={None: schema},
                                     render_schema_translate=True)
        if len(_SQL) >= _CACHE_MAX:
            _SQL.clear()
        cached = _SQL[(schema, key)] = (str(compiled), dict(compiled.params))
    sql, bound = cached
    return conn.connection.driver_connection.execute(sql, {**bound, **params} if params else bound)  # type: ignore[union-attr]


def merge_statement(table: Table, rows: Select[Any], merge: Mapping[str, Merge] | None = None) -> Executable:
    """INSERT the selected rows (all of `table`'s columns, in order); on a key conflict apply `merge`.

    Without `merge` a conflict is an error: the rows must be new.
    """
    stmt = insert(table).from_select([c.name for c in table.columns], rows)
    if merge:
        return stmt.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={name: how(table.c[name], stmt.excluded[name]) for name, how in merge.items()},
        )
    return stmt


def merge_into(
    conn: Connection, table: Table, key: Hashable, rows: Callable[[], Select[Any]],
    merge: Mapping[str, Merge] | None = None,
) -> None:
    """merge_statement(table, rows(), merge), built once per schema and `key` (which names `rows`)."""
    merged = tuple(merge.items()) if merge else ()
    execute_once_compiled(conn, ("merge", table, key, merged), lambda: merge_statement(table, rows(), merge))


def write(conn: Connection, table: Table, rows: Sequence[Sequence[Any]], merge: Mapping[str, Merge] | None = None) -> None:
    """Insert rows (tuples in the table's column order); on a primary-key conflict apply `merge`."""
    if not rows:
        return
    with staged(conn, table, rows) as stage:
        merge_into(conn, table, stage.name, lambda: select(*stage.columns), merge)
