"""Password hashes and refresh tokens in PostgreSQL (schema `auth`, outside the ledger; see 0005_auth.sql)."""

from __future__ import annotations

import datetime as dt
import uuid

from psycopg_pool import ConnectionPool

from application.sessions import CredentialStore, RefreshRecord


class PostgresCredentialStore(CredentialStore):
    def __init__(self, url: str, *, pool_size: int = 2) -> None:
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, kwargs={"autocommit": True})

    def set_password_hash(self, tenant_id: str, user_id: str, password_hash: str) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO auth.credentials (user_id, tenant_id, password_hash) VALUES (%s, %s, %s)"
                " ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = now()",
                (user_id, tenant_id, password_hash),
            )

    def password_hash(self, user_id: str) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT password_hash FROM auth.credentials WHERE user_id = %s", (user_id,)).fetchone()
        return row[0] if row else None

    def add_refresh(self, record: RefreshRecord) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO auth.refresh_tokens (token_sha256, family_id, user_id, tenant_id, expires_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (record.token_sha256, record.family_id, record.user_id, record.tenant_id, record.expires_at),
            )

    def use_refresh(self, token_sha256: str, now: dt.datetime) -> tuple[RefreshRecord | None, bool]:
        """Mark the token used; (its record, whether this call was the first use of a live token).

        One UPDATE with the conditions in its WHERE: two concurrent refreshes with one token cannot both win.
        """
        with self._pool.connection() as conn:
            won = conn.execute(
                "UPDATE auth.refresh_tokens SET used_at = %s WHERE token_sha256 = %s"
                " AND used_at IS NULL AND revoked_at IS NULL AND expires_at > %s"
                " RETURNING family_id, user_id, tenant_id, expires_at",
                (now, token_sha256, now),
            ).fetchone()
            if won:
                return RefreshRecord(token_sha256, won[0], won[1], won[2], won[3]), True
            row = conn.execute(
                "SELECT family_id, user_id, tenant_id, expires_at FROM auth.refresh_tokens WHERE token_sha256 = %s",
                (token_sha256,),
            ).fetchone()
        return (RefreshRecord(token_sha256, row[0], row[1], row[2], row[3]) if row else None), False

    def revoke_family(self, family_id: uuid.UUID, now: dt.datetime) -> int:
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE auth.refresh_tokens SET revoked_at = %s WHERE family_id = %s AND revoked_at IS NULL",
                (now, family_id),
            )
            return cur.rowcount

    def family_revoked(self, family_id: uuid.UUID) -> bool:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT bool_or(revoked_at IS NOT NULL) FROM auth.refresh_tokens WHERE family_id = %s", (family_id,)
            ).fetchone()
        return bool(row and row[0])

    def spend_once(self, digest: str, expires_at: dt.datetime) -> bool:
        """One INSERT: of two concurrent callbacks with one state, the primary key lets one win (0006_sso.sql)."""
        with self._pool.connection() as conn:
            cur = conn.execute("INSERT INTO auth.spent_states (digest, expires_at) VALUES (%s, %s)"
                               " ON CONFLICT (digest) DO NOTHING", (digest, expires_at))
            return cur.rowcount == 1

    def close(self) -> None:
        self._pool.close()



