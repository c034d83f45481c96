"""The sandbox registry's files: its htpasswd entry, the archive put into its container,
and the secrets file that holds its password."""

from __future__ import annotations

import io
import tarfile

import bcrypt

from sandbox import cluster
from sandbox.secrets import SECRET_NAMES, ensure_secrets_file, read_secret


def test_htpasswd_line_is_bcrypt_and_checks_the_password():
    line = cluster.htpasswd_line("deploykit", "s3cret")
    user, hashed = line.rstrip("\n").split(":", 1)
    assert user == "deploykit" and hashed.startswith("$2b$")
    assert bcrypt.checkpw(b"s3cret", hashed.encode())
    assert not bcrypt.checkpw(b"other", hashed.encode())


def test_registry_files_are_private_to_the_registry_user(tmp_path, monkeypatch):
    for name, content in (
        ("REGISTRY_CERTIFICATE_FILE", b"CERT"),
        ("REGISTRY_KEY_FILE", b"KEY"),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        monkeypatch.setattr(cluster, name, path)
    files = cluster._registry_files_tar("plain-secret", 999, 998)
    archive = tarfile.open(fileobj=io.BytesIO(files))
    modes = {m.name: (oct(m.mode), m.uid, m.gid) for m in archive.getmembers()}
    assert modes == {
        "tls": ("0o755", 0, 0),
        "config.yml": ("0o644", 0, 0),
        "tls/registry.crt": ("0o644", 0, 0),
        "tls/registry.key": ("0o600", 999, 998),
        "htpasswd": ("0o600", 999, 998),
    }
    config = archive.extractfile("config.yml").read().decode()
    assert "htpasswd:" in config and "tls:" in config
    # A bcrypt hash never holds a '-' (its alphabet is ./A-Za-z0-9): the password cannot
    # appear in it by chance, as a two-letter one could.
    assert "plain-secret" not in archive.extractfile("htpasswd").read().decode()


def test_the_config_id_changes_with_the_password(tmp_path, monkeypatch):
    for name in ("REGISTRY_CERTIFICATE_FILE", "REGISTRY_KEY_FILE"):
        (tmp_path / name).write_bytes(name.encode())
        monkeypatch.setattr(cluster, name, tmp_path / name)
    assert cluster._registry_config_id("a") == cluster._registry_config_id("a")
    assert cluster._registry_config_id("a") != cluster._registry_config_id("b")


def test_an_older_secrets_file_gains_the_registry_password_and_keeps_its_values(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("# old\nDB_PASSWORD=kept\nREDIS_PASSWORD=r\nSECRET_KEY_BASE=k\n")
    ensure_secrets_file(path)
    assert read_secret(path, "DB_PASSWORD") == "kept"
    assert len(read_secret(path, "REGISTRY_PASSWORD")) == 48
    before = path.read_text()
    ensure_secrets_file(path)
    assert path.read_text() == before


def test_a_new_secrets_file_is_private_and_complete(tmp_path):
    path = ensure_secrets_file(tmp_path / "new" / "secrets.env")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert all(read_secret(path, name) for name in SECRET_NAMES)
