"""A Microsoft Entra ID certificate credential: an app registration's RSA private key and its certificate.

Many organisations allow their app registrations no client secrets, only certificates. Entra ID then
takes, instead of the secret, a JWT the app signs with the certificate's private key (PS256, the
certificate named by its SHA-256 thumbprint: https://learn.microsoft.com/entra/identity-platform/certificate-credentials).

The credential is written `entra-cert:DIRECTORY:CLIENT_ID:BUNDLE_BASE64`, the bundle being the unencrypted
private key and the certificate uploaded to the app registration, either as PEM in any order or as a
PKCS#12 (.pfx) file without a password (as Azure Key Vault exports one), base64-encoded onto one line, so
that it travels like any other credential (an environment variable, a line on stdin) and is sealed at
rest like them. Everything wrong with it is found here, when it is configured, with a precise reason:
an encrypted key, a key that is not RSA or too short, a key that matches none of the certificates, a
certificate that has expired or is not valid yet.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

MIN_RSA_BITS = 2048
_PRIVATE_KEY_BLOCK = re.compile(rb"-----BEGIN ((?:RSA |ENCRYPTED |EC )?PRIVATE KEY)-----.+?-----END \1-----", re.S)


class InvalidCertificate(ValueError):
    """Why a certificate credential cannot sign in; never quotes the credential."""


@dataclass(frozen=True)
class EntraCertificate:
    thumbprint_s256: str  # base64url (unpadded) SHA-256 of the certificate's DER: the assertion's x5t#S256
    not_before: dt.datetime
    not_after: dt.datetime
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)


def load_certificate(encoded: str) -> EntraCertificate:
    """The key and the certificate it belongs to, from the credential's base64 PEM bundle or PKCS#12 file."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCertificate("expected the PEM bundle (private key and certificate) or the PKCS#12 file,"
                                 " base64-encoded onto one line, got something that is not base64") from None
    key, certificates = _from_pem(raw) if raw.lstrip().startswith(b"-----BEGIN") else _from_pkcs12(raw)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidCertificate(f"an RSA private key (Entra ID signs in with RSA certificates), got"
                                 f" {type(key).__name__.removeprefix('_').replace('PrivateKey', '')}")
    if key.key_size < MIN_RSA_BITS:
        raise InvalidCertificate(f"an RSA key of at least {MIN_RSA_BITS} bits, got {key.key_size}")
    if not certificates:
        raise InvalidCertificate("expected a certificate in the bundle, found none that can be read")
    public = key.public_key().public_numbers()
    mine = [c for c in certificates if isinstance(c.public_key(), rsa.RSAPublicKey)
            and c.public_key().public_numbers() == public]  # type: ignore[union-attr]
    if not mine:
        raise InvalidCertificate(f"the private key matches none of the bundle's {len(certificates)} certificate(s)")
    certificate = mine[0]
    der = certificate.public_bytes(serialization.Encoding.DER)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    return EntraCertificate(thumbprint, certificate.not_valid_before_utc, certificate.not_valid_after_utc, key)


def _from_pem(pem: bytes) -> tuple[object, list[x509.Certificate]]:
    keys = [m.group(0) for m in _PRIVATE_KEY_BLOCK.finditer(pem)]
    if len(keys) != 1:
        raise InvalidCertificate(f"expected one private key in the PEM bundle, found {len(keys)}")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except TypeError:  # cryptography's way of saying the key needs a password
        raise InvalidCertificate("the private key is encrypted: give it unencrypted (the credential is sealed at"
                                 " rest)") from None
    except (ValueError, binascii.Error):
        raise InvalidCertificate("the private key in the PEM bundle cannot be read") from None
    try:
        return key, x509.load_pem_x509_certificates(pem)
    except ValueError:
        return key, []


def _from_pkcs12(data: bytes) -> tuple[object, list[x509.Certificate]]:
    """A PKCS#12 (.pfx) file without a password, as Azure Key Vault holds a certificate: the value of its secret
    (`az keyvault secret show ... --query value -o tsv`) is this file in base64 already."""
    try:
        key, certificate, chain = pkcs12.load_key_and_certificates(data, None)
    except ValueError as exc:
        if "password" in str(exc).lower():
            raise InvalidCertificate("the PKCS#12 file is password-protected (or damaged): export it without a"
                                     " password (the credential is sealed at rest)") from None
        raise InvalidCertificate("expected a PEM bundle or a PKCS#12 file, got neither") from None
    if key is None:
        raise InvalidCertificate("expected a private key in the PKCS#12 file, found none")
    return key, [c for c in (certificate, *chain) if c is not None]


def check_validity(certificate: EntraCertificate, now: dt.datetime) -> None:
    """Refuse a certificate Entra ID would refuse at every sign-in: expired, or not valid yet."""
    if certificate.not_after <= now:
        raise InvalidCertificate(f"a certificate that is still valid, got one that expired on"
                                 f" {certificate.not_after:%Y-%m-%d %H:%M} UTC")
    if certificate.not_before > now:
        raise InvalidCertificate(f"a certificate that is valid now, got one valid from"
                                 f" {certificate.not_before:%Y-%m-%d %H:%M} UTC")
