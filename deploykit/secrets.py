"""Secrets: a dotenv file per environment, kept encrypted in git with git-crypt.

The file named by ``app_secrets_file`` (relative to the repository) holds NAME=VALUE
lines. It is read on the machine running pyinfra, never uploaded as is: its values
are rendered into each host's private env file (mode 0600) and into the data
services' configuration, and are masked wherever a diff is shown.

A file still encrypted by git-crypt (the repository is locked) starts with the bytes
``\\0GITCRYPT\\0``; reading it is refused with the command that unlocks it, instead of
rendering ciphertext into production config.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .paths import REPO_ROOT

GIT_CRYPT_MAGIC = b"\x00GITCRYPT\x00"
# A PEM private key block (a TLS key): masked in diffs, never printed.
PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class SecretsError(Exception):
    """The secrets file is missing, locked or malformed; the message names it."""


def secrets_path(relative: str) -> Path:
    path = Path(relative)
    return path if path.is_absolute() else REPO_ROOT / path


def parse_dotenv(text: str, source: str) -> dict[str, str]:
    """NAME=VALUE lines; blank lines and # comments skipped; one level of matching
    single or double quotes removed; ``export`` prefixes allowed, as in shell files."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, separator, value = line.partition("=")
        name = name.strip()
        if not separator or not _NAME.match(name):
            # The line itself is never quoted: it may be a secret (a value that lost its
            # NAME=, a key pasted whole).
            raise SecretsError(
                f"{source}:{number}: expected NAME=VALUE (the line is not shown: it may "
                "hold a secret)"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def load_secrets(relative: str) -> dict[str, str]:
    """The secrets in `relative` ('' means none)."""
    if not relative:
        return {}
    return parse_dotenv(_unlocked_text(relative, f"secrets file {relative}"), relative)


def _unlocked_text(relative: str, label: str) -> str:
    """The text of a file kept in git-crypt, refused (naming it as `label`) when it is
    missing, still encrypted, or not text."""
    path = secrets_path(relative)
    if not path.is_file():
        raise SecretsError(f"{label} does not exist")
    content = path.read_bytes()
    if content.startswith(GIT_CRYPT_MAGIC):
        raise SecretsError(
            f"{label} is still encrypted by git-crypt; "
            "unlock the repository first: git-crypt unlock (docs/operations.md: Secrets)"
        )
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretsError(f"{label} is not UTF-8 text") from None


def read_private_key_file(relative: str, setting: str) -> str:
    """The text of a PEM file holding a private key (`setting` names where it is set),
    refused with a clear message when it is missing, still encrypted by git-crypt, not
    PEM text, or inside the repository where git would store it unencrypted.

    A key git ignores (the sandbox's own, under .sandbox/) or kept outside the
    repository is never committed, so it may be plain.
    """
    text = _unlocked_text(relative, f"{setting}: {relative}")
    if "PRIVATE KEY-----" not in text:
        raise SecretsError(f"{setting}: {relative} holds no PEM private key")
    if stored_unencrypted_in_git(secrets_path(relative)):
        raise SecretsError(
            f"{setting}: {relative} holds a private key that git would store unencrypted: "
            "cover it with git-crypt in .gitattributes (files/tls/*.pem is, by default) "
            "or keep it out of the repository"
        )
    return text


def stored_unencrypted_in_git(path: Path) -> bool:
    """True when `path` is inside this repository's work tree, not ignored by git, and
    not under the git-crypt filter (.gitattributes). Without git, or outside the work
    tree, nothing is stored, so False."""
    try:
        relative = path.resolve().relative_to(REPO_ROOT.resolve())
    except ValueError:
        return False

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )

    try:
        if git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
            return False
        if git("check-ignore", "-q", "--", str(relative)).returncode == 0:
            return False
        attribute = git("check-attr", "filter", "--", str(relative)).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return not attribute.rstrip().endswith(": filter: git-crypt")
