"""Sealed personal data: AES-256-GCM envelopes under one data key per data subject (crypto-shredding).

docs/privacy.md is the prose. In short:

    envelope  = {"enc": "aes-256-gcm/v1", "subject": S, "kid": K, "nonce": b64(12 bytes), "ct": b64(ct || tag)}
    plaintext = RFC 8785 canonical JSON of the value (so any JSON value seals and opens unchanged)
    AD        = b"nexus-sealed/v1" 0x00 || JCS({"kid": K, "subject": S, "tenant": T})

The associated data binds a ciphertext to its tenant, subject and key: an envelope copied into another
subject's or tenant's event does not open there, even if the keys were ever the same. Data keys are
stored wrapped (AES-256-GCM again) under a master key, bound the same way to the row they belong to.
Destroying a subject's data key is erasure: every envelope sealed under it becomes noise, while the
ledger, which hashed the ciphertext, still verifies.

Pure: no I/O here. Key generation takes its randomness from `secrets`, and nonces may be passed in so
that golden vectors are reproducible.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.canonical import canonical_json

ENC = "aes-256-gcm/v1"
ENVELOPE_MEMBERS = frozenset({"enc", "subject", "kid", "nonce", "ct"})
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES

_SEAL_DOMAIN = b"nexus-sealed/v1\x00"
_WRAP_DOMAIN = b"nexus-data-key/v1\x00"
_MASTER_ID_DOMAIN = b"nexus-master-key-id/v1\x00"
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_KID = re.compile(r"^[0-9a-f]{32}$")
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")

REDACTED: Mapping[str, bool] = {"redacted": True}
"""What stands in for content when a tenant has switched content storage off."""

SUBJECT_KEY_SHREDDED = "SubjectKeyShredded"
CONTENT_STORAGE_POLICY_CHANGED = "ContentStoragePolicyChanged"


# --- errors ---------------------------------------------------------------------------------------


class SealingError(Exception):
    """Anything the privacy layer refuses or cannot do."""


class InvalidSubjectId(SealingError, ValueError):
    def __init__(self, subject_id: object) -> None:
        super().__init__(
            f"subject id {subject_id!r} must be 1-128 characters: a letter or digit, then letters, digits or _ . : -"
        )
        self.subject_id = subject_id


class EnvelopeInvalid(SealingError, ValueError):
    """Not a well-formed envelope, or one that does not authenticate: tampered, or moved from elsewhere."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"sealed envelope invalid: {problem}")
        self.problem = problem


class SubjectErased(SealingError):
    """The envelope's data key was destroyed (crypto-shredded): the content is gone for good."""

    def __init__(self, tenant_id: str, subject_id: str, kid: str, position: int | None = None) -> None:
        where = f" (erasure recorded at ledger position {position})" if position is not None else ""
        super().__init__(
            f"subject {subject_id!r} of tenant {tenant_id!r} was erased: data key {kid} is destroyed{where}"
        )
        self.tenant_id = tenant_id
        self.subject_id = subject_id
        self.kid = kid
        self.position = position


class UnknownSubject(SealingError, LookupError):
    """Erasure asked for a subject that has no data key and was never erased: nothing was ever sealed for it."""

    def __init__(self, tenant_id: str, subject_id: str) -> None:
        super().__init__(f"subject {subject_id!r} of tenant {tenant_id!r} has no data key: nothing to erase")
        self.tenant_id = tenant_id
        self.subject_id = subject_id


class SubjectAlreadyErased(SealingError):
    """A second erasure with nothing sealed since the first: nothing more to destroy."""

    def __init__(self, tenant_id: str, subject_id: str, position: int) -> None:
        super().__init__(
            f"subject {subject_id!r} of tenant {tenant_id!r} is already erased (ledger position {position})"
            " and nothing was sealed for it since"
        )
        self.tenant_id = tenant_id
        self.subject_id = subject_id
        self.position = position


class ContentStorageDisabled(SealingError):
    """The tenant has switched content storage off: content must be redacted, not sealed."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} has content storage switched off; store a redaction marker instead")
        self.tenant_id = tenant_id


class MasterKeyInvalid(SealingError, ValueError):
    """A master key that is not 32 bytes in hex (64 digits) or base64."""


class DataKeyUnwrapFailed(SealingError):
    """A stored data key does not unwrap: another master key wrapped it, or the stored row was altered."""

    def __init__(self, kid: str, expected_master: str, found_master: str) -> None:
        detail = (
            f"it was wrapped under master key {found_master}, this process holds {expected_master}"
            if found_master != expected_master
            else "the stored row does not authenticate under the master key (altered or moved)"
        )
        super().__init__(f"data key {kid} cannot be unwrapped: {detail}")
        self.kid = kid
        self.expected_master = expected_master
        self.found_master = found_master


# --- keys -----------------------------------------------------------------------------------------


def validate_subject_id(subject_id: object) -> str:
    """Subject ids stay in the ledger in clear text forever, so they must be opaque (never an email)."""
    if not isinstance(subject_id, str) or not _SUBJECT.match(subject_id):
        raise InvalidSubjectId(subject_id)
    return subject_id


@dataclass(frozen=True)
class DataKey:
    """One data subject's AES-256 key. `secret` never appears in repr or logs."""

    tenant_id: str
    subject_id: str
    kid: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class MasterKey:
    """The key that wraps every data key. Its id is a domain-separated hash, so it names but never reveals it."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise MasterKeyInvalid(f"a master key has {KEY_BYTES} bytes, got {len(self.secret)}")

    @property
    def kid(self) -> str:
        return hashlib.sha256(_MASTER_ID_DOMAIN + self.secret).hexdigest()[:16]

    @staticmethod
    def from_text(text: str) -> MasterKey:
        """32 bytes written as 64 hex digits or as base64 (standard or URL-safe, padding optional)."""
        text = text.strip()
        if _HEX_KEY.match(text):
            return MasterKey(bytes.fromhex(text))
        try:
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyInvalid("the master key is neither 64 hex digits nor base64") from None
        if len(raw) != KEY_BYTES:
            raise MasterKeyInvalid(f"the master key decodes to {len(raw)} bytes, expected {KEY_BYTES}")
        return MasterKey(raw)

    @staticmethod
    def generate() -> MasterKey:
        return MasterKey(secrets.token_bytes(KEY_BYTES))


def new_data_key(tenant_id: str, subject_id: str) -> DataKey:
    return DataKey(tenant_id, validate_subject_id(subject_id), secrets.token_hex(16), secrets.token_bytes(KEY_BYTES))


def _wrap_ad(tenant_id: str, subject_id: str, kid: str) -> bytes:
    return _WRAP_DOMAIN + canonical_json({"kid": kid, "subject": subject_id, "tenant": tenant_id})


def wrap_data_key(master: MasterKey, key: DataKey, nonce: bytes | None = None) -> bytes:
    """nonce || AES-256-GCM(master, data key) with the key's tenant, subject and kid as associated data."""
    nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(master.secret).encrypt(nonce, key.secret, _wrap_ad(key.tenant_id, key.subject_id, key.kid))


def unwrap_data_key(
    master: MasterKey, tenant_id: str, subject_id: str, kid: str, wrapped: bytes, master_kid: str
) -> DataKey:
    if master_kid != master.kid or len(wrapped) != WRAPPED_BYTES:
        raise DataKeyUnwrapFailed(kid, master.kid, master_kid)
    try:
        secret = AESGCM(master.secret).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_ad(tenant_id, subject_id, kid)
        )
    except InvalidTag:
        raise DataKeyUnwrapFailed(kid, master.kid, master_kid) from None
    return DataKey(tenant_id, subject_id, kid, secret)


# --- envelopes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    subject_id: str
    kid: str
    nonce: bytes
    ciphertext: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "enc": ENC,
            "subject": self.subject_id,
            "kid": self.kid,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "ct": base64.b64encode(self.ciphertext).decode("ascii"),
        }


def associated_data(tenant_id: str, subject_id: str, kid: str) -> bytes:
    return _SEAL_DOMAIN + canonical_json({"kid": kid, "subject": subject_id, "tenant": tenant_id})


def is_sealed(value: object) -> bool:
    """True for anything shaped like an envelope (whether it opens is another matter)."""
    return isinstance(value, Mapping) and value.keys() == ENVELOPE_MEMBERS and value.get("enc") == ENC


def is_redacted(value: object) -> bool:
    return isinstance(value, Mapping) and dict(value) == dict(REDACTED)


def seal_with(key: DataKey, value: Any, nonce: bytes | None = None) -> dict[str, str]:
    """The value's canonical JSON, encrypted under the subject's key and bound to tenant, subject and kid.

    Nonces are 96 random bits: with one key per subject, the 2**32 encryptions per key under which
    random nonces stay safe (NIST SP 800-38D) are far beyond any one person's requests.
    """
    plaintext = canonical_json(value)  # NotCanonicalisable (a ValueError) for anything that is not JSON
    nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce has {NONCE_BYTES} bytes, got {len(nonce)}")
    ad = associated_data(key.tenant_id, key.subject_id, key.kid)
    return Envelope(key.subject_id, key.kid, nonce, AESGCM(key.secret).encrypt(nonce, plaintext, ad)).to_json()


def parse_envelope(value: object) -> Envelope:
    """The envelope's parts, or EnvelopeInvalid saying what is wrong with its shape."""
    if not isinstance(value, Mapping):
        raise EnvelopeInvalid(f"expected a JSON object, got {type(value).__name__}")
    if value.keys() != ENVELOPE_MEMBERS:
        raise EnvelopeInvalid(f"expected members {sorted(ENVELOPE_MEMBERS)}, got {sorted(map(str, value.keys()))}")
    if value["enc"] != ENC:
        raise EnvelopeInvalid(f"unsupported scheme {value['enc']!r}, expected {ENC!r}")
    subject, kid = value["subject"], value["kid"]
    if not isinstance(subject, str) or not _SUBJECT.match(subject):
        raise EnvelopeInvalid(f"subject {subject!r} is not a subject id")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise EnvelopeInvalid(f"kid {kid!r} is not 32 lowercase hex digits")
    nonce = _b64(value["nonce"], "nonce")
    ciphertext = _b64(value["ct"], "ct")
    if len(nonce) != NONCE_BYTES:
        raise EnvelopeInvalid(f"nonce has {len(nonce)} bytes, expected {NONCE_BYTES}")
    if len(ciphertext) < TAG_BYTES:
        raise EnvelopeInvalid(f"ct has {len(ciphertext)} bytes, shorter than the {TAG_BYTES}-byte tag")
    return Envelope(subject, kid, nonce, ciphertext)


def _b64(text: object, name: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeInvalid(f"{name} must be a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeInvalid(f"{name} is not valid base64") from None


def open_with(key: DataKey, tenant_id: str, envelope: Envelope) -> Any:
    """The sealed value, if the envelope authenticates under this key for this tenant and subject."""
    if (key.tenant_id, key.subject_id, key.kid) != (tenant_id, envelope.subject_id, envelope.kid):
        raise EnvelopeInvalid(
            f"sealed for tenant {tenant_id!r}, subject {envelope.subject_id!r}, kid {envelope.kid};"
            f" the key offered is {key.tenant_id!r}/{key.subject_id!r}/{key.kid}"
        )
    ad = associated_data(tenant_id, envelope.subject_id, envelope.kid)
    try:
        plaintext = AESGCM(key.secret).decrypt(envelope.nonce, envelope.ciphertext, ad)
    except InvalidTag:
        raise EnvelopeInvalid(
            "authentication failed: the ciphertext or nonce was altered, or it was sealed for another tenant or subject"
        ) from None
    return orjson.loads(plaintext)


# --- the tenant's content-storage policy ----------------------------------------------------------


def content_storage_enabled(tenant_stream: Iterable[tuple[str, Mapping[str, Any]]]) -> bool:
    """Fold a tenant's stream of (type, payload): content is stored unless the last policy change said no."""
    enabled = True
    for event_type, payload in tenant_stream:
        if event_type == CONTENT_STORAGE_POLICY_CHANGED:
            enabled = bool(payload["content_storage"])
    return enabled
