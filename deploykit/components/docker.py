"""Docker engine: Debian's docker.io (default) or Docker's own packages."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from cryptography import x509
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, systemd

from ..errors import refuse
from ..facts import AptPackageVersions
from ..commands.images import IMAGES_LOCK
from ..operations.config_file import config_file
from ..operations.registry_login import registry_login
from ..operations.users import group_member
from ..paths import REPO_ROOT
from ..registry import is_registry_name
from ..registry_access import read_logins

DEFAULTS = {
    # "debian" installs Debian's docker.io; "docker-ce" uses download.docker.com's
    # docker-ce packages.
    "docker_package_source": "debian",
    # Size at which a container's json log is rotated, and how many files are kept.
    "docker_log_max_size": "10m",
    "docker_log_max_file": 5,
    # Keep containers running while dockerd itself restarts (upgrades, config changes).
    "docker_live_restore": True,
    # No process in a container may gain privileges (setuid binaries, file capabilities).
    "docker_no_new_privileges": True,
    # Containers on the default bridge (docker0) may talk to each other; the app's own
    # network is a user-defined one, which this does not affect.
    "docker_icc": False,
    # Containers may dump core (a dump can hold secrets from memory).
    "docker_core_dumps": False,
    # Registries reached over plain HTTP, such as a private one on the LAN ("host:port").
    "docker_insecure_registries": [],
    # Users who run docker without sudo, effective in the same run.
    "docker_users": ["deploy"],
    # CA certificates the engine trusts for a registry beyond the system's, as
    # {"host:port": "path/ca.crt"} (relative to the repository): each lands in
    # /etc/docker/certs.d/<host:port>/ca.crt, which the engine reads at every pull.
    "docker_registry_ca_files": {},
    # Registries the hosts log in to, as {"host:port": {"username": "...",
    # "password_secret": "NAME"}}, NAME a secret of app_secrets_file (README: Private
    # registries). root (pulls run with sudo) and docker_users log in.
    "docker_registry_logins": {},
}

DOCKER_CE_REPO = "https://download.docker.com/linux/debian"
# A staged daemon.json must be one JSON object (jq exits non-zero on a syntax error).
DAEMON_JSON_CHECK = "jq -e 'type == \"object\"' {path} >/dev/null"


def registry_ca_certificates(data) -> tuple[dict[str, str], list[str]]:
    """{registry: PEM text} of docker_registry_ca_files, and the problems found."""
    found, problems = {}, []
    for registry, relative in (data.docker_registry_ca_files or {}).items():
        where = f"docker_registry_ca_files[{registry!r}]"
        if not isinstance(registry, str) or not is_registry_name(registry):
            problems.append(f"{where}: the key must be a registry host[:port]")
            continue
        path = Path(str(relative))
        path = path if path.is_absolute() else REPO_ROOT / path
        if not path.is_file():
            problems.append(f"{where}: {relative} does not exist")
            continue
        text = path.read_text(errors="replace")
        try:
            x509.load_pem_x509_certificates(text.encode())
        except ValueError:
            problems.append(f"{where}: {relative} holds no PEM certificate")
            continue
        found[registry] = text
    return found, problems


def _refuse(problems: list[str]) -> None:
    # Imported here: preflight imports config, which imports every component.
    refuse([f"host {host.name}: {problem}" for problem in problems])


def daemon_json(data) -> str:
    """The engine's settings; keys sorted so the file only changes when a value does."""
    settings = {
        "log-driver": "json-file",
        "log-opts": {
            "max-size": str(data.docker_log_max_size),
            "max-file": str(data.docker_log_max_file),
        },
        "live-restore": bool(data.docker_live_restore),
        "no-new-privileges": bool(data.docker_no_new_privileges),
        "icc": bool(data.docker_icc),
    }
    if not data.docker_core_dumps:
        settings["default-ulimits"] = {"core": {"Name": "core", "Hard": 0, "Soft": 0}}
    if data.docker_insecure_registries:
        settings["insecure-registries"] = list(data.docker_insecure_registries)
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


def debian_docker_packages(docker_cli: dict) -> list[str]:
    """Debian's engine, and its client where that is a package of its own: docker.io
    holds both up to Debian 12; from Debian 13 the `docker` command is in docker-cli,
    which docker.io only recommends."""
    if docker_cli["candidate"] or docker_cli["installed"]:
        return ["docker.io", "docker-cli"]
    return ["docker.io"]


def docker_ce_source(distribution: dict) -> str:
    """The apt source line of download.docker.com for the host's own Debian release."""
    codename = (distribution.get("release_meta") or {}).get("VERSION_CODENAME")
    if not codename:
        raise ValueError(f"/etc/os-release of {distribution.get('name')} names no VERSION_CODENAME")
    return f"deb [signed-by=/etc/apt/keyrings/docker.asc] {DOCKER_CE_REPO} {codename} stable"


@deploy("Docker engine", data_defaults=DEFAULTS)
def docker() -> None:
    source = host.data.docker_package_source
    if source == "debian":
        packages = debian_docker_packages(host.get_fact(AptPackageVersions, package="docker-cli"))
    else:
        files.download(
            name="Ensure Docker's apt signing key is present",
            src=f"{DOCKER_CE_REPO}/gpg",
            dest="/etc/apt/keyrings/docker.asc",
            mode="0644",
        )
        repository = apt.repo(
            name="Ensure Docker's apt repository is configured",
            src=docker_ce_source(host.get_fact(LinuxDistribution)),
            filename="docker",
        )
        apt.update(name="Ensure apt knows Docker's packages", _if=repository.did_change)
        packages = ["docker-ce", "docker-ce-cli", "containerd.io"]

    # The staged daemon.json is checked by jq: dockerd is not installed yet the first
    # time (and 20.10 has no --validate), and a host need not have python3.
    apt.packages(
        name="Ensure jq (the check of daemon.json) is installed",
        packages=["jq"],
        no_recommends=True,
    )
    # Written before the package so the engine's very first start already rotates logs.
    settings = config_file(
        name="Ensure the Docker daemon rotates logs and uses the kit's settings",
        content=daemon_json(host.data),
        dest="/etc/docker/daemon.json",
        validate=DAEMON_JSON_CHECK,
    )
    apt.packages(
        name="Ensure the Docker engine is installed",
        packages=packages,
        no_recommends=True,
    )
    systemd.service(
        name="Ensure the Docker engine is running",
        service="docker.service",
        running=True,
        enabled=True,
        restarted=settings.will_change,
    )
    for user in host.data.docker_users:
        group_member(
            name=f"Ensure {user} runs docker without sudo, from this run on",
            user=user,
            group="docker",
            probe="docker info --format '{{.ServerVersion}}'",
        )

    images_lock_folder()
    certificates, problems = registry_ca_certificates(host.data)
    if problems:
        _refuse(problems)
    for registry, certificate in sorted(certificates.items()):
        config_file(
            name=f"Ensure the Docker engine trusts the CA of registry {registry}",
            content=certificate,
            dest=f"/etc/docker/certs.d/{registry}/ca.crt",
        )
    registry_logins()


@deploy("Docker registry logins", data_defaults=DEFAULTS)
def registry_logins() -> None:
    """root and docker_users logged in to every registry of docker_registry_logins. The
    deploys that pull call it too, so a rotated password logs in again before a pull."""
    logins, problems = read_logins(host.data)
    if problems:
        _refuse(problems)
    users = ["root", *(user for user in host.data.docker_users if user != "root")]
    for registry, login in sorted(logins.items()):
        registry_login(
            name=f"Ensure {', '.join(users)} are logged in to registry {registry}",
            registry=registry,
            username=login.username,
            password=login.password,
            users=users,
        )


def images_lock_folder() -> None:
    """The folder of the images lock: the deploy user's, so that only root and that user
    can create the lock file; /run is emptied at boot, so tmpfiles.d makes it again.
    The lock file itself is made the deploy user's too: one that root's pull created
    first, under the hardened umask (027), would be root's 0640, and the deploy user's
    cleanup and hotfix load could not open it."""
    user = host.data.get("ssh_user") or "deploy"
    folder = posixpath.dirname(IMAGES_LOCK)
    config_file(
        name="Ensure the images lock's folder is made at boot, the deploy user's only",
        content=(
            "# Managed by deploykit (components/docker.py).\n"
            f"d {folder} 0700 {user} {user}\n"
            f"f {IMAGES_LOCK} 0600 {user} {user}\n"
        ),
        dest="/etc/tmpfiles.d/deploykit.conf",
    )
    files.directory(
        name="Ensure the images lock's folder exists, the deploy user's only",
        path=folder,
        user=user,
        group=user,
        mode="0700",
    )
    files.file(
        name="Ensure the images lock file is the deploy user's",
        path=IMAGES_LOCK,
        user=user,
        group=user,
        mode="0600",
    )
