"""Signed checkpoints and public signing keys in the ledger schema (append-only like the events)."""

from __future__ import annotations

import datetime as dt

import psycopg

from application.ports import CheckpointStore
from domain.checkpoint import Checkpoint


class PostgresCheckpointStore(CheckpointStore):
    def __init__(self, url: str) -> None:
        self._url = url

    def publish_key(self, key_id: str, public_key: bytes) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO ledger.signing_keys (key_id, algorithm, public_key, created_at)"
                " VALUES (%s, 'ed25519', %s, %s) ON CONFLICT (key_id) DO NOTHING",
                (key_id, public_key, dt.datetime.now(dt.UTC)),
            )

    def public_keys(self) -> dict[str, bytes]:
        with psycopg.connect(self._url, autocommit=True) as conn:
            return {k: bytes(p) for k, p in conn.execute("SELECT key_id, public_key FROM ledger.signing_keys")}

    def add(self, checkpoint: Checkpoint) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO ledger.checkpoints (tree_size, key_id, root, chain_head, hash_alg, ledger_id, signed_at,"
                " signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    checkpoint.tree_size, checkpoint.key_id, checkpoint.root, checkpoint.chain_head,
                    checkpoint.hash_alg, checkpoint.ledger_id, checkpoint.signed_at, checkpoint.signature,
                ),
            )

    def latest(self) -> Checkpoint | None:
        found = self.list(limit=1)
        return found[0] if found else None

    def list(self, limit: int = 100, at_most_size: int | None = None) -> list[Checkpoint]:
        with psycopg.connect(self._url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT ledger_id, hash_alg, tree_size, root, chain_head, signed_at, key_id, signature"
                " FROM ledger.checkpoints WHERE tree_size <= %s ORDER BY tree_size DESC, signed_at DESC LIMIT %s",
                (at_most_size if at_most_size is not None else 2**62, limit),
            ).fetchall()
        return [Checkpoint(str(r[0]), r[1], r[2], bytes(r[3]), bytes(r[4]), r[5], r[6], bytes(r[7])) for r in rows]
