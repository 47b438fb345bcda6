"""Signs the ledger's latest tree head, at most once a second in the background and on demand."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from application.ports import CheckpointStore, Ledger, SigningKeyHandle, SigningKeyStore
from domain.checkpoint import Checkpoint
from domain.entry import format_timestamp
from domain.ledger import NewEvent

log = logging.getLogger(__name__)

SIGNING_KEYS_STREAM = "ledger-signing-keys"


class CheckpointSigner:
    def __init__(self, ledger: Ledger, keys: SigningKeyStore, store: CheckpointStore) -> None:
        self._ledger = ledger
        self._keys = keys
        self._store = store
        self._lock = threading.Lock()
        self._last_signed_size = -1

    def key(self) -> SigningKeyHandle:
        key = self._keys.current()
        if key is None:
            key = self.rotate()
        return key

    def rotate(self) -> SigningKeyHandle:
        """A new signing key; the rotation is an event, so the ledger itself says which key signed when."""
        previous = self._keys.current()
        key = self._keys.generate()
        self._store.publish_key(key.key_id, key.public_key)
        self._ledger.append(
            [
                NewEvent(
                    SIGNING_KEYS_STREAM,
                    "SigningKeyRotated",
                    {
                        "key_id": key.key_id,
                        "algorithm": "ed25519",
                        "public_key": key.public_key.hex(),
                        "previous_key_id": previous.key_id if previous else None,
                    },
                )
            ]
        )
        log.info("signing key rotated to %s", key.key_id)
        return key

    def sign_now(self) -> Checkpoint:
        with self._lock:
            key = self.key()
            head = self._ledger.head()
            genesis = self._ledger.genesis()
            unsigned = Checkpoint(
                ledger_id=genesis.ledger_id,
                hash_alg=genesis.hash_alg,
                tree_size=head.size,
                root=head.root,
                chain_head=head.chain_head,
                signed_at=format_timestamp(dt.datetime.now(dt.UTC)),
                key_id=key.key_id,
            )
            signed = Checkpoint(**{**unsigned.__dict__, "signature": key.sign(unsigned.message())})
            self._store.add(signed)
            self._last_signed_size = head.size
            return signed

    def sign_if_grown(self) -> Checkpoint | None:
        if self._ledger.head().size == self._last_signed_size:
            return None
        return self.sign_now()

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        while not stop.wait(interval_s):
            try:
                self.sign_if_grown()
            except Exception:  # keep signing later; a failed tick loses nothing
                log.exception("checkpoint signing failed")
