"""deploykit/secrets.py: a malformed secrets line is named but never quoted, and a TLS
private key is refused while planning when missing, locked, or stored in clear in git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploykit import secrets
from deploykit.secrets import GIT_CRYPT_MAGIC, SecretsError, parse_dotenv, read_private_key_file

KIT_ROOT = Path(__file__).resolve().parents[2]
PEM = (
    "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANkey\n-----END PRIVATE KEY-----\n"
)


def test_a_malformed_line_is_named_by_number_but_never_quoted():
    text = "A=1\nhunter2-the-password\n"
    with pytest.raises(SecretsError) as raised:
        parse_dotenv(text, "secrets/production.env")
    assert str(raised.value) == (
        "secrets/production.env:2: expected NAME=VALUE (the line is not shown: it may hold"
        " a secret)"
    )
    assert "hunter2" not in str(raised.value)


def test_a_line_with_a_bad_name_is_not_quoted_either():
    with pytest.raises(SecretsError) as raised:
        parse_dotenv("9DB PASSWORD=s3cret-value\n", "s.env")
    assert "s3cret" not in str(raised.value)


@pytest.fixture
def repository(tmp_path, monkeypatch):
    """A git work tree with the kit's .gitattributes and .gitignore, as REPO_ROOT."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(KIT_ROOT / ".gitattributes", tmp_path / ".gitattributes")
    shutil.copy(KIT_ROOT / ".gitignore", tmp_path / ".gitignore")
    monkeypatch.setattr(secrets, "REPO_ROOT", tmp_path)
    return tmp_path


def put(root: Path, relative: str, content: bytes | str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def test_the_default_key_path_is_under_git_crypt(repository):
    put(repository, "files/tls/haproxy.pem", PEM)
    assert read_private_key_file("files/tls/haproxy.pem", "haproxy_tls_certificate") == PEM


def test_a_key_git_would_store_unencrypted_is_refused(repository):
    put(repository, "files/haproxy.pem", PEM)
    with pytest.raises(SecretsError) as raised:
        read_private_key_file("files/haproxy.pem", "haproxy_tls_certificate")
    assert str(raised.value) == (
        "haproxy_tls_certificate: files/haproxy.pem holds a private key that git would store "
        "unencrypted: cover it with git-crypt in .gitattributes (files/tls/*.pem is, by "
        "default) or keep it out of the repository"
    )


def test_a_key_git_ignores_or_outside_the_repository_may_be_plain(repository, tmp_path_factory):
    put(repository, ".sandbox/tls/haproxy.pem", PEM)  # the sandbox's own, git-ignored
    assert read_private_key_file(".sandbox/tls/haproxy.pem", "haproxy_tls_certificate") == PEM
    elsewhere = tmp_path_factory.mktemp("keys") / "site.pem"
    elsewhere.write_text(PEM)
    assert read_private_key_file(str(elsewhere), "haproxy_tls_certificate") == PEM


def test_a_locked_key_is_refused_with_how_to_unlock(repository):
    put(repository, "files/tls/haproxy.pem", GIT_CRYPT_MAGIC + b"\x8f\x01ciphertext")
    with pytest.raises(SecretsError) as raised:
        read_private_key_file("files/tls/haproxy.pem", "haproxy_tls_certificate")
    assert str(raised.value) == (
        "haproxy_tls_certificate: files/tls/haproxy.pem is still encrypted by git-crypt; "
        "unlock the repository first: git-crypt unlock (docs/operations.md: Secrets)"
    )


def test_a_missing_key_is_refused_naming_the_setting(repository):
    with pytest.raises(SecretsError) as raised:
        read_private_key_file("files/tls/haproxy.pem", "haproxy_tls_certificate")
    assert str(raised.value) == "haproxy_tls_certificate: files/tls/haproxy.pem does not exist"


def test_a_file_without_a_private_key_is_refused(repository):
    put(repository, "files/tls/haproxy.pem", "-----BEGIN CERTIFICATE-----\nx\n")
    with pytest.raises(SecretsError, match="holds no PEM private key"):
        read_private_key_file("files/tls/haproxy.pem", "haproxy_tls_certificate")
