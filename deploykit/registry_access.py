"""Who may pull what: each registry's login, from the settings and the secrets file, and
the planning-time question "does this tag exist, for these credentials?".

``docker_registry_logins`` (docker component) names, per registry, the user and the
secret holding its password::

    docker_registry_logins = {
        "registry.example.com": {"username": "deploy", "password_secret": "REGISTRY_PASSWORD"},
    }

The password is a line of ``app_secrets_file`` (encrypted by git-crypt), read on the
machine running pyinfra. It reaches a host only as a file in a folder only the SSH user
can enter, removed by the very command that reads it: never on a command line (``ps``),
in pyinfra's printed commands, or in a ``--diff``. It stays out of the app's env file too
(deploykit/appenv.py leaves these secrets out): the app has no business with it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

from pyinfra.api import StringCommand

from .registry import ManifestAnswer, is_registry_name, normalize_registry, parse_reference
from .secrets import SecretsError, load_secrets

REGISTRY_SCRIPT = Path(__file__).with_name("registry.py")
LOGIN_KEYS = {"username", "password_secret"}


@dataclass(frozen=True)
class RegistryLogin:
    """One registry's credentials; the password never shows in a repr."""

    registry: str
    username: str
    password_secret: str
    password: str = field(repr=False)


def password_secret_names(data) -> set[str]:
    """The secrets that are registry passwords (kept out of the app's environment)."""
    logins = data.get("docker_registry_logins") or {}
    if not isinstance(logins, dict):
        return set()
    return {
        entry["password_secret"]
        for entry in logins.values()
        if isinstance(entry, dict) and isinstance(entry.get("password_secret"), str)
    }


def read_logins(data) -> tuple[dict[str, RegistryLogin], list[str]]:
    """Every configured login by registry (Docker Hub's aliases as ``docker.io``), and the
    problems found; a problem names the setting and the entry, never a password."""
    logins = data.get("docker_registry_logins") or {}
    if not logins:
        return {}, []
    if not isinstance(logins, dict):
        return {}, ["docker_registry_logins must map registries to {username, password_secret}"]
    secrets_file = data.get("app_secrets_file") or ""
    problems: list[str] = []
    try:
        secrets = load_secrets(secrets_file)
    except SecretsError as error:
        return {}, [str(error)]
    found = {}
    for registry, entry in logins.items():
        where = f"docker_registry_logins[{registry!r}]"
        if not isinstance(registry, str) or not is_registry_name(registry):
            problems.append(f"{where}: the key must be a registry as docker login takes it")
            continue
        if not isinstance(entry, dict) or set(entry) != LOGIN_KEYS:
            problems.append(f"{where} must be {{'username': ..., 'password_secret': ...}}")
            continue
        username, secret = entry["username"], entry["password_secret"]
        if not isinstance(username, str) or not username or any(c.isspace() for c in username):
            problems.append(f"{where}: username must be a word, got {username!r}")
            continue
        if not isinstance(secret, str) or not secrets.get(secret):
            problems.append(
                f"{where}: password_secret {secret!r} is not set in the secrets file "
                f"{secrets_file or '(app_secrets_file is not set)'}"
            )
            continue
        if "\n" in secrets[secret]:
            problems.append(f"{where}: the password in {secret} spans lines")
            continue
        key = normalize_registry(registry)
        found[key] = RegistryLogin(key, username, secret, secrets[secret])
    return found, problems


# --- the planning-time check --------------------------------------------------------
#
# Asked from the first web host, not from the machine running pyinfra, because what
# matters is whether the hosts can pull: the registry's name in app_image is the one the
# hosts resolve (the sandbox's `registry:5000` exists only on its network, as a registry
# on a private LAN or behind split DNS does), the path is theirs (firewall, proxy), and
# so are the CA files their engines trust (/etc/docker/certs.d). From here, the check
# could pass while every pull fails, or refuse a roll that would work.
#
# The host runs deploykit/registry.py itself (standard library only), uploaded with the
# credentials as a JSON file into a fresh `mktemp -d` folder (0700, the SSH user's) over
# SFTP; the command that reads them removes the folder.


@dataclass(frozen=True)
class Resolved:
    """The planning-time answer: the manifest digest the hosts will pull, or why they
    cannot pull (the registry, what it answered, and the setting to look at)."""

    digest: str | None = None
    problem: str | None = None


def resolve_image(host, image_repository: str, reference: str) -> Resolved:
    """Ask the registry, from `host`, for ``image_repository`` at `reference` (a tag,
    or a digest to check it still exists) with the hosts' credentials."""
    try:
        image = parse_reference(image_repository)
    except ValueError as error:
        return Resolved(problem=f"app_image: {error}")
    if image.tag or image.digest:
        return Resolved(
            problem=f"app_image {image_repository!r} must not carry a tag (the roll gives it)"
        )
    logins, problems = read_logins(host.data)
    if problems:
        return Resolved(problem="; ".join(problems))
    login = logins.get(image.registry)
    insecure = image.registry in (host.data.get("docker_insecure_registries") or [])
    answer = ask_from_host(host, image.name, reference, login, insecure)
    if answer.outcome == "present" and answer.digest:
        return Resolved(digest=answer.digest)
    return Resolved(problem=_refusal(host, image, image_repository, reference, login, answer))


def _refusal(host, image, image_repository, reference, login, answer) -> str:
    insecure = image.registry in (host.data.get("docker_insecure_registries") or [])
    separator = "@" if reference.startswith("sha256:") else ":"
    shown = f"{image_repository}{separator}{reference}"
    url = image.manifest_url(reference, insecure)
    if answer.outcome == "present":
        return f"the registry answered no digest for {shown} ({url})"
    if answer.outcome == "missing":
        return f"image {shown} does not exist in the registry ({answer.detail} for {url})"
    if answer.outcome == "denied" and login is None:
        return (
            f"registry {image.registry} asks for credentials to pull {image.repository} "
            f"({answer.detail}); docker_registry_logins has none for {image.registry}"
        )
    if answer.outcome == "denied":
        return (
            f"registry {image.registry} refused the credentials of user {login.username} "
            f"for {image.repository}: {answer.detail}; check {login.password_secret} in the "
            f"secrets file and docker_registry_logins[{image.registry!r}]"
        )
    return (
        f"the registry does not answer as expected from {host.name} ({answer.detail} for "
        f"{url}); is it up and reachable, and does the host trust its certificate "
        "(docker_registry_ca_files)?"
    )


def ask_from_host(
    host, image: str, reference: str, login: RegistryLogin | None, insecure: bool
) -> ManifestAnswer:
    """Run registry.py on `host` and read its answer (as the SSH user, without sudo)."""
    ok, output = host.run_shell_command(
        StringCommand("umask 077 && mktemp -d"), _sudo=False, _timeout=30
    )
    folder = output.stdout.strip() if ok else ""
    if not folder.startswith("/"):
        return ManifestAnswer("unreachable", None, f"mktemp -d failed: {output.stderr}")
    ran = False
    try:
        host.put_file(StringIO(REGISTRY_SCRIPT.read_text()), f"{folder}/registry.py")
        arguments = ["manifest", image, reference]
        if login is not None:
            credentials = {"username": login.username, "password": login.password}
            host.put_file(StringIO(json.dumps(credentials)), f"{folder}/auth.json")
            arguments += ["--auth-file", f"{folder}/auth.json"]
        if insecure:
            arguments.append("--insecure")
        command = check_command(folder, arguments)
        ran = True  # from here on, the command itself removes the folder
        ok, output = host.run_shell_command(StringCommand(command), _sudo=False, _timeout=60)
    finally:
        if not ran:
            host.run_shell_command(
                StringCommand(f"rm -rf {shlex.quote(folder)}"), _sudo=False, _timeout=30
            )
    try:
        return ManifestAnswer.from_json(output.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError, TypeError):
        return ManifestAnswer(
            "unexpected", None, f"the check did not run on {host.name}: {output.stderr.strip()}"
        )


def check_command(folder: str, arguments: list[str]) -> str:
    """python3 FOLDER/registry.py ARGS, then the folder (credentials included) removed."""
    script = shlex.quote(f"{folder}/registry.py")
    return (
        f"python3 {script} {shlex.join(arguments)}; status=$?; "
        f"rm -rf {shlex.quote(folder)}; exit $status"
    )
