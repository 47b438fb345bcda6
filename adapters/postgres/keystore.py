"""Per-subject data keys in PostgreSQL (schema `keystore`, outside the append-only ledger), and the master key.

A row holds a data key wrapped under the master key (domain/sealing.py); the master key itself never
reaches the database. The application role may SELECT, INSERT and DELETE rows and nothing else, so a
key is never changed in place: it exists until it is destroyed.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from psycopg_pool import ConnectionPool

from application.ports import SubjectKeyStore
from domain.sealing import (
    DataKey,
    MasterKey,
    MasterKeyInvalid,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)

log = logging.getLogger(__name__)

MASTER_KEY_ENV = "NEXUS_MASTER_KEY"
MASTER_KEY_FILE = "master.key"


def load_master_key(key_dir: Path, environ: Mapping[str, str] | None = None) -> MasterKey:
    """NEXUS_MASTER_KEY (hex or base64) if set, else `<key_dir>/master.key`, created (0600) on first use.

    The file appears atomically (written under a temporary name, then hard-linked into place, which
    fails if another process got there first), so concurrent first starts agree on one key.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(MASTER_KEY_ENV, "").strip()
    if text:
        return MasterKey.from_text(text)
    path = key_dir / MASTER_KEY_FILE
    if not path.exists():
        _create_master_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("master key file %s is readable by others (mode %o); it should be 0600", path, mode)
    try:
        return MasterKey.from_text(path.read_text())
    except MasterKeyInvalid as err:
        raise MasterKeyInvalid(f"{path}: {err}") from None


def _create_master_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(MasterKey.generate().secret.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first; theirs is the key
    finally:
        tmp.unlink(missing_ok=True)


class PostgresKeyStore(SubjectKeyStore):
    def __init__(self, url: str, master: MasterKey, *, pool_size: int = 2) -> None:
        self._master = master
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, kwargs={"autocommit": True})

    @property
    def master_kid(self) -> str:
        return self._master.kid

    def get(self, tenant_id: str, subject_id: str) -> DataKey | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT kid, wrapped, master_kid FROM keystore.data_keys WHERE tenant_id = %s AND subject_id = %s",
                (tenant_id, subject_id),
            ).fetchone()
        if row is None:
            return None
        return unwrap_data_key(self._master, tenant_id, subject_id, row[0], bytes(row[1]), row[2])

    def get_or_create(self, tenant_id: str, subject_id: str) -> DataKey:
        key = new_data_key(tenant_id, subject_id)
        with self._pool.connection() as conn:
            # One statement: insert ours unless the subject has a key; either way return the stored one.
            # Two racing creators both end up with the winner's row (the loser's insert does nothing).
            row = conn.execute(
                "WITH ins AS ("
                "  INSERT INTO keystore.data_keys (tenant_id, subject_id, kid, master_kid, wrapped)"
                "  VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, subject_id) DO NOTHING"
                "  RETURNING kid, wrapped, master_kid)"
                " SELECT kid, wrapped, master_kid FROM ins"
                " UNION ALL"
                " SELECT kid, wrapped, master_kid FROM keystore.data_keys WHERE tenant_id = %s AND subject_id = %s"
                " LIMIT 1",
                (tenant_id, subject_id, key.kid, self._master.kid, wrap_data_key(self._master, key),
                 tenant_id, subject_id),
            ).fetchone()
            if row is None:  # the winner's row is not yet visible to this statement's snapshot: read again
                row = conn.execute(
                    "SELECT kid, wrapped, master_kid FROM keystore.data_keys WHERE tenant_id = %s AND subject_id = %s",
                    (tenant_id, subject_id),
                ).fetchone()
        if row is None:
            raise RuntimeError(f"data key of {tenant_id}/{subject_id} vanished while it was being created")
        if row[0] == key.kid:
            return key
        return unwrap_data_key(self._master, tenant_id, subject_id, row[0], bytes(row[1]), row[2])

    @contextmanager
    def destroying(self, tenant_id: str, subject_id: str) -> Iterator[str | None]:
        # The row stays locked until the block ends, so the erasure record and the deletion commit together
        # or not at all; a concurrent erasure of the same subject waits here, then finds nothing.
        with self._pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "DELETE FROM keystore.data_keys WHERE tenant_id = %s AND subject_id = %s RETURNING kid",
                (tenant_id, subject_id),
            ).fetchone()
            yield row[0] if row else None

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PostgresKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
