"""Provider credentials sealed at rest: AES-256-GCM under the master key (adapters/postgres/keystore.py).

The master key is the one the privacy layer loads (NEXUS_MASTER_KEY or `<data>/keys/master.key`), so
one secret protects both; a separate domain string in the associated data keeps a credential
envelope from ever being mistaken for (or opened as) personal data, and binds it to its tenant and
deployment, so a ciphertext copied into another deployment does not open.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from application.deployments import CredentialSealer
from domain.canonical import canonical_json
from domain.sealing import MasterKey

SCHEME = "nexus-credential/v1"
_DOMAIN = b"nexus-credential/v1\x00"
_NONCE_BYTES = 12


class CredentialInvalid(ValueError):
    """A credential envelope that does not open: altered, moved, or sealed under another master key."""


def _ad(tenant_id: str, deployment: str) -> bytes:
    return _DOMAIN + canonical_json({"deployment": deployment, "tenant": tenant_id})


class AesGcmCredentialSealer(CredentialSealer):
    def __init__(self, master: MasterKey) -> None:
        self._aead = AESGCM(master.secret)
        self._master_kid = master.kid

    def seal(self, tenant_id: str, deployment: str, secret: str) -> dict[str, str]:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, secret.encode(), _ad(tenant_id, deployment))
        return {"enc": SCHEME, "master_kid": self._master_kid, "nonce": base64.b64encode(nonce).decode(),
                "ct": base64.b64encode(ciphertext).decode()}

    def open(self, tenant_id: str, deployment: str, envelope: Mapping[str, Any]) -> str:
        if envelope.get("enc") != SCHEME:
            raise CredentialInvalid(f"expected scheme {SCHEME!r}, got {envelope.get('enc')!r}")
        if envelope.get("master_kid") != self._master_kid:
            raise CredentialInvalid(
                f"sealed under master key {envelope.get('master_kid')}, this process holds {self._master_kid}"
            )
        try:
            plaintext = self._aead.decrypt(
                base64.b64decode(envelope["nonce"]), base64.b64decode(envelope["ct"]), _ad(tenant_id, deployment)
            )
        except (InvalidTag, KeyError, ValueError):
            raise CredentialInvalid(f"the credential of deployment {deployment!r} does not authenticate") from None
        return plaintext.decode()
