"""Versioned schema migrations: numbered SQL files applied once each, in order, under an advisory lock."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

APP_ROLE = "nexus_app"
_MIGRATION_LOCK = 0x4E455855  # any constant; serialises concurrent start-ups


def migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("adapters.postgres") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    return sorted(found)


def ensure_app_role(conn: psycopg.Connection, password: str | None) -> None:
    """Create the least-privileged role the application connects as (needs CREATEROLE once)."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
    if not exists:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))
        except psycopg.errors.DuplicateObject:
            pass  # created concurrently by another start-up; roles are cluster-wide
    if password:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(password)))
    grant_database_privileges(conn)


def grant_database_privileges(conn: psycopg.Connection) -> None:
    """CONNECT, and CREATE for the read-model schemas. Per database: a TEMPLATE clone does not copy them."""
    conn.execute(
        sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(conn.info.dbname), sql.Identifier(APP_ROLE)
        )
    )


def migrate(admin_url: str, app_password: str | None = None) -> list[str]:
    """Apply pending migrations as the admin role; returns the names applied."""
    applied: list[str] = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            ensure_app_role(conn, app_password)
            conn.execute("CREATE SCHEMA IF NOT EXISTS nexus_meta")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS nexus_meta.migrations ("
                " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM nexus_meta.migrations")}
            for version, name, text in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(text)  # type: ignore[arg-type]  # trusted, shipped with the code
                    conn.execute("INSERT INTO nexus_meta.migrations (version, name) VALUES (%s, %s)", (version, name))
                log.info("applied migration %s", name)
                applied.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
