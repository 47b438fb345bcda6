"""Self-signed certificates for the fake Microsoft Entra ID and the tests of certificate credentials."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def self_signed(key: PrivateKey, *, valid_from_days: float = -1, valid_for_days: float = 365,
                name: str = "nexus-gateway") -> x509.Certificate:
    """A certificate as an app registration's owner makes one (`openssl req -x509`), valid from now + valid_from_days."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=valid_from_days)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=valid_for_days)).sign(key, hashes.SHA256()))


def pem_bundle(key: PrivateKey, *certificates: x509.Certificate, password: bytes | None = None) -> str:
    """The credential's last part: the key and certificates as PEM, base64-encoded onto one line."""
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    pem += b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    return base64.b64encode(pem).decode()


def pkcs12_bundle(key: PrivateKey, certificate: x509.Certificate | None, *chain: x509.Certificate,
                  password: bytes | None = None) -> str:
    """The same as a PKCS#12 (.pfx) file, base64: what Azure Key Vault holds as a certificate's secret value."""
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    pfx = pkcs12.serialize_key_and_certificates(b"nexus-gateway", key, certificate, list(chain) or None, encryption)
    return base64.b64encode(pfx).decode()


def thumbprint_s256(certificate: x509.Certificate) -> str:
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
