"""Ed25519 signing keys as files outside the database (mode 0600); only public keys go to the ledger."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from application.ports import SigningKeyHandle, SigningKeyStore
from domain.checkpoint import key_id_for


class SigningKey(SigningKeyHandle):
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_id_for(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(key_id={self.key_id!r})"


class FileKeyStore(SigningKeyStore):
    """Keys live in `directory`; `current` names the active one. Rotation writes a new file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def current(self) -> SigningKey | None:
        pointer = self.directory / "current"
        if not pointer.exists():
            return None
        return self._load(pointer.read_text().strip())

    def generate(self) -> SigningKey:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = SigningKey(Ed25519PrivateKey.generate())
        pem = key._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = self.directory / f"{key.key_id}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        tmp = self.directory / "current.tmp"
        tmp.write_text(key.key_id)
        tmp.replace(self.directory / "current")
        return key

    def _load(self, key_id: str) -> SigningKey:
        pem = (self.directory / f"{key_id}.pem").read_bytes()
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"key {key_id} is not an Ed25519 key")
        return SigningKey(private)
