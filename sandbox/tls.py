"""Certificates for the sandbox: self-signed ones for the load balancers (127.0.0.1 and
localhost) and the database (clients use sslmode=require: encrypted, not verified), and
the sandbox's own certificate authority, which signs the registry's certificate: the
hosts' Docker engines verify the registry against it, as against a company CA; and the
fleet's own CA with the certificates it signs (web hosts' nginx, the syslog receiver)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int):
    """A certificate valid from five minutes ago (clocks drift) for `days`."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _self_signed(common_name: str, alternative_names: list[x509.GeneralName]):
    """(certificate PEM, private key PEM) valid for a year."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(name, name, key.public_key(), days=365)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


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


def _write_public(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def ensure_ca(certificate_path: Path, key_path: Path) -> None:
    """The sandbox's CA: a certificate (public, what clients trust) and its key (0600),
    valid for ten years, made once."""
    if certificate_path.exists() and key_path.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deploykit sandbox CA")])
    certificate = (
        _builder(name, name, key.public_key(), days=3650)
        # What strict verifiers (Go's, OpenSSL's X509_STRICT, the default from Python
        # 3.13 on) want of a CA: critical basic constraints and key usage, and a key id.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(certificate_path, certificate.public_bytes(serialization.Encoding.PEM))


def ensure_signed_certificate(
    ca_certificate_path: Path,
    ca_key_path: Path,
    certificate_path: Path,
    key_path: Path,
    dns_names: list[str],
    ip_addresses: list[str],
) -> None:
    """A server certificate for `dns_names` and `ip_addresses`, signed by the CA, made
    once (again when the CA is newer than it: a certificate of a replaced CA is useless)."""
    if (
        certificate_path.exists()
        and key_path.exists()
        and certificate_path.stat().st_mtime >= ca_certificate_path.stat().st_mtime
    ):
        return
    ca_certificate = x509.load_pem_x509_certificate(ca_certificate_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
    certificate = (
        _builder(subject, ca_certificate.subject, key.public_key(), days=365)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(certificate_path, certificate.public_bytes(serialization.Encoding.PEM))


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- the fleet's own CA --------------------------------------------------------------------
# A real fleet keeps its CA's certificate and the certificates it signed in files/ (keys
# under git-crypt); the sandbox makes its own. HAProxy verifies the web hosts' nginx
# against it, and rsyslog the remote syslog receiver.


def new_ca(common_name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a CA valid for a year."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(name, name, key.public_key(), days=365)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_certificate(
    common_name: str, dns_names: list[str], ca_certificate: bytes, ca_key: bytes
) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a TLS server, signed by the CA given."""
    issuer = x509.load_pem_x509_certificate(ca_certificate)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(subject, issuer.subject, key.public_key(), days=365)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ensure_fleet_ca(certificate_path: Path, key_path: Path) -> None:
    """The sandbox fleet's CA (key 0600), once."""
    if certificate_path.exists() and key_path.exists():
        return
    certificate, key = new_ca("deploykit sandbox fleet CA")
    _write_private(key_path, key)
    certificate_path.write_bytes(certificate)


def ensure_fleet_certificate(
    certificate_path: Path,
    key_path: Path,
    ca_paths: tuple[Path, Path],
    common_name: str,
    dns_names: list[str],
) -> None:
    """A server certificate signed by the fleet's CA (key 0600), once per CA: a new CA
    (its files removed) issues a new one."""
    ca_certificate, ca_key = (path.read_bytes() for path in ca_paths)
    if certificate_path.exists() and key_path.exists():
        issued = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        if issued.issuer == x509.load_pem_x509_certificate(ca_certificate).subject:
            return
    certificate, key = issue_certificate(common_name, dns_names, ca_certificate, ca_key)
    _write_private(key_path, key)
    certificate_path.write_bytes(certificate)
