"""Workers' resume positions in schema `workers` (migration 0007)."""

from __future__ import annotations

import psycopg

from application.ports import ResumePositions


class PostgresResumePositions(ResumePositions):
    def __init__(self, url: str) -> None:
        self._url = url

    def load(self, worker: str) -> int | None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            row = conn.execute("SELECT position FROM workers.resume_positions WHERE worker = %s", (worker,)).fetchone()
        return None if row is None else int(row[0])

    def advance(self, worker: str, position: int) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO workers.resume_positions AS r (worker, position) VALUES (%s, %s)"
                " ON CONFLICT (worker) DO UPDATE SET position = excluded.position, saved_at = now()"
                " WHERE r.position < excluded.position",
                (worker, position),
            )

    def reset(self, worker: str, position: int) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO workers.resume_positions (worker, position) VALUES (%s, %s)"
                " ON CONFLICT (worker) DO UPDATE SET position = excluded.position, saved_at = now()",
                (worker, position),
            )
