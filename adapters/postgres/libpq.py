"""What the modules that drive libpq directly (psycopg.pq) share: turning its results into psycopg's errors."""

from __future__ import annotations

import psycopg
from psycopg.pq import DiagnosticField, ExecStatus, PGresult


def check_results(results: list[PGresult], expected: int) -> None:
    """Raise the typed psycopg error of the first failed statement, or if the count is not `expected`."""
    for result in results:
        if result.status == ExecStatus.FATAL_ERROR:
            state = result.error_field(DiagnosticField.SQLSTATE)
            message = (result.error_message or b"").decode(errors="replace").strip()
            try:
                error_class = psycopg.errors.lookup(state.decode()) if state else psycopg.DatabaseError
            except KeyError:
                error_class = psycopg.DatabaseError
            raise error_class(message)
    if len(results) != expected:
        raise psycopg.InternalError(f"expected {expected} results, got {len(results)}")
