"""Self-signed certificates for the sandbox: the load balancers' (127.0.0.1 and
localhost) and the database's (clients use sslmode=require: encrypted, not verified)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _self_signed(common_name: str, alternative_names: list[x509.GeneralName]):
    """(certificate PEM, private key PEM) valid for a year."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(content)


def ensure_self_signed_pem(path: Path) -> Path:
    """Write certificate + key as one PEM (HAProxy's `crt` format), once."""
    if path.exists():
        return path
    certificate, key = _self_signed(
        "deploykit sandbox",
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    _write_private(path, certificate + key)
    return path


def ensure_postgres_certificate(certificate_path: Path, key_path: Path) -> None:
    """Write PostgreSQL's certificate and key as two files (key 0600), once."""
    if certificate_path.exists() and key_path.exists():
        return
    certificate, key = _self_signed("deploykit sandbox postgres", [x509.DNSName("db1")])
    _write_private(key_path, key)
    certificate_path.write_bytes(certificate)
