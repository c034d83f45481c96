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
from pathlib import Path

from .paths import REPO_ROOT

GIT_CRYPT_MAGIC = b"\x00GITCRYPT\x00"
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
            raise SecretsError(f"{source}:{number}: expected NAME=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def load_secrets(relative: str) -> dict[str, str]:
    """The secrets in `relative` ('' means none)."""
    if not relative:
        return {}
    path = secrets_path(relative)
    if not path.is_file():
        raise SecretsError(f"secrets file {relative} does not exist")
    content = path.read_bytes()
    if content.startswith(GIT_CRYPT_MAGIC):
        raise SecretsError(
            f"secrets file {relative} is still encrypted by git-crypt; "
            "unlock the repository first: git-crypt unlock (README: Secrets)"
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretsError(f"secrets file {relative} is not UTF-8 text") from None
    return parse_dotenv(text, relative)
