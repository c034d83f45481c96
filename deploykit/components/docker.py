"""Docker engine: Debian's docker.io (default) or Docker's own packages."""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from ..operations.config_file import config_file
from ..operations.users import group_member

DEFAULTS = {
    # "debian" installs Debian's docker.io; "docker" uses download.docker.com's docker-ce.
    "docker_package_source": "debian",
    # Size at which a container's json log is rotated, and how many files are kept.
    "docker_log_max_size": "10m",
    "docker_log_max_file": 5,
    # Keep containers running while dockerd itself restarts (upgrades, config changes).
    "docker_live_restore": True,
    # Registries reached over plain HTTP, such as a private one on the LAN ("host:port").
    "docker_insecure_registries": [],
    # Users who run docker without sudo, effective in the same run.
    "docker_users": ["deploy"],
}

DOCKER_CE_REPO = "https://download.docker.com/linux/debian"


def daemon_json(data) -> str:
    """The engine's settings; keys sorted so the file only changes when a value does."""
    settings = {
        "log-driver": "json-file",
        "log-opts": {
            "max-size": str(data.docker_log_max_size),
            "max-file": str(data.docker_log_max_file),
        },
        "live-restore": bool(data.docker_live_restore),
    }
    if data.docker_insecure_registries:
        settings["insecure-registries"] = list(data.docker_insecure_registries)
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


@deploy("Docker engine", data_defaults=DEFAULTS)
def docker() -> None:
    source = host.data.docker_package_source
    if source == "debian":
        packages = ["docker.io"]
    else:
        files.download(
            name="Ensure Docker's apt signing key is present",
            src=f"{DOCKER_CE_REPO}/gpg",
            dest="/etc/apt/keyrings/docker.asc",
            mode="0644",
        )
        repository = apt.repo(
            name="Ensure Docker's apt repository is configured",
            src=f"deb [signed-by=/etc/apt/keyrings/docker.asc] {DOCKER_CE_REPO} "
            f"{host.data.get('docker_debian_codename', 'bookworm')} stable",
            filename="docker",
        )
        apt.update(name="Ensure apt knows Docker's packages", _if=repository.did_change)
        packages = ["docker-ce", "docker-ce-cli", "containerd.io"]

    # Written before the package so the engine's very first start already rotates logs.
    settings = config_file(
        name="Ensure the Docker daemon rotates logs and uses the kit's settings",
        content=daemon_json(host.data),
        dest="/etc/docker/daemon.json",
        validate="python3 -c 'import json,sys; json.load(open(sys.argv[1]))' {path}",
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
