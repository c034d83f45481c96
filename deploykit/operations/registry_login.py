"""Docker clients logged in to a registry, with the password on stdin only."""

from __future__ import annotations

import base64
import hashlib
import posixpath
import secrets
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.server import Users

from ..facts import DockerClientAuths
from ..registry import config_key
from .config_file import UPLOAD_DIR


def stored_auth_sha256(username: str, password: str) -> str:
    """What DockerClientAuths reports for these credentials: the SHA-256 of the `auth`
    value `docker login` writes into config.json (base64 of user:password)."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return hashlib.sha256(auth.encode()).hexdigest()


def login_command(
    password_file: str, logins: list[tuple[str, str, str]], registry: str, username: str
) -> str:
    """One shell command: each (user, group, client folder) logs in with the password
    read from `password_file` on stdin; the file is removed however the command ends."""
    q = shlex.quote
    steps = []
    for user, group, folder in logins:
        steps += [
            f"install -d -m 0700 -o {q(user)} -g {q(group)} {q(folder)}",
            # runuser: the user's own groups (docker) and files; DOCKER_CONFIG: its
            # folder, whatever HOME the sudo in front left.
            f"runuser -u {q(user)} -- env DOCKER_CONFIG={q(folder)} docker login "
            f"--username {q(username)} --password-stdin {q(registry)} "
            f"< {q(password_file)} >/dev/null",
            f"chmod 0600 {q(posixpath.join(folder, 'config.json'))}",
        ]
    return f"trap {q('rm -f ' + q(password_file))} EXIT; " + " && ".join(steps)


@operation()
def registry_login(registry: str, username: str, password: str, users: list[str]):
    """
    Log each user's Docker client in to a registry; a second run with the same
    credentials changes nothing, a changed password logs in again.

    + registry: as ``docker login`` takes it (``registry.example.com:5000``, ``docker.io``)
    + username: the registry account
    + password: its password or token; it travels as a file in a folder only the SSH user
      can enter, is read by ``docker login --password-stdin`` and removed by the same
      command: it is on no command line and in no printed command or diff
    + users: the accounts whose ``~/.docker/config.json`` get the login (0600, in a 0700
      folder, each the user's own)

    **Example:**

    .. code:: python

        registry_login(
            name="Ensure root and deploy are logged in to registry.example.com",
            registry="registry.example.com",
            username="deploy",
            password=secrets["REGISTRY_PASSWORD"],
            users=["root", "deploy"],
        )
    """
    accounts = host.get_fact(Users)
    missing = [user for user in users if user not in accounts]
    if missing:
        raise OperationError(f"user {', '.join(missing)} does not exist; bootstrap first")
    folders = {user: posixpath.join(accounts[user]["home"], ".docker") for user in users}
    key = config_key(registry)
    stored = host.get_fact(DockerClientAuths, key=key, folders=tuple(folders.values()))
    wanted = stored_auth_sha256(username, password)

    to_login, fixes = [], []
    for user, folder in folders.items():
        state = stored.get(folder) or {}
        group = accounts[user]["group"]
        if state.get("auth_sha256") != wanted:
            to_login.append((user, group, folder))
            continue
        # Logged in already: only the modes and owners may need putting right.
        for kind, path, mode in (
            ("folder", folder, "700"),
            ("file", posixpath.join(folder, "config.json"), "600"),
        ):
            if state.get(kind) != [mode, user]:
                fixes.append(StringCommand("chmod", "0" + mode, QuoteString(path)))
                fixes.append(StringCommand("chown", f"{user}:{group}", QuoteString(path)))

    if not to_login and not fixes:
        host.noop(f"{', '.join(users)} logged in to {registry}")
        return
    yield from fixes
    if not to_login:
        return
    ssh_user = host.data.get("ssh_user") or "root"
    password_file = f"{UPLOAD_DIR}/registry-login-{secrets.token_hex(8)}"
    yield StringCommand("install", "-d", "-m", "0700", "-o", ssh_user, UPLOAD_DIR)
    # Created empty with its final mode first: the upload's copy keeps it.
    yield StringCommand("install", "-m", "0600", "/dev/null", QuoteString(password_file))
    yield FileUploadCommand(
        StringIO(password), password_file, remote_temp_filename=password_file + ".upload"
    )
    yield StringCommand(login_command(password_file, to_login, registry, username))
