"""Bootstrap: run once as root on a fresh host to create the deploy user."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, server

from ..operations.config_file import config_file, render_template
from ..paths import REPO_ROOT
from .common import DEFAULTS as COMMON_DEFAULTS

DEFAULTS = {
    # The account every later deploy connects as.
    "bootstrap_deploy_user": "deploy",
    # Folder (relative to the repository) whose *.pub files are the deploy user's keys.
    "bootstrap_authorized_keys_dir": "files/authorized_keys",
    # Further public key files, relative to the repository (the sandbox adds its own).
    "bootstrap_extra_public_key_files": [],
}


def authorized_keys(data) -> list[str]:
    folder = REPO_ROOT / data.bootstrap_authorized_keys_dir
    paths = sorted(folder.glob("*.pub")) + [
        REPO_ROOT / extra for extra in data.bootstrap_extra_public_key_files
    ]
    keys = [line.strip() for path in paths for line in Path(path).read_text().splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise ValueError(
            f"no public keys in {folder}/*.pub nor in bootstrap_extra_public_key_files: "
            "the deploy user could never log in"
        )
    return keys


@deploy("Bootstrap the deploy user", data_defaults=DEFAULTS)
def bootstrap() -> None:
    user = host.data.bootstrap_deploy_user
    # A fresh VM's package lists may be empty, and provisioning plans from what apt offers
    # (the PostgreSQL major of the host's Debian release, for one): fill them first.
    apt.update(
        name="Ensure the apt package lists are fresh",
        cache_time=host.data.get("common_apt_cache_seconds")
        or COMMON_DEFAULTS["common_apt_cache_seconds"],
    )
    apt.packages(
        name="Ensure sudo is installed",
        packages=["sudo"],
        update=False,
        no_recommends=True,
    )
    server.user(
        name=f"Ensure the {user} user exists with the team's keys",
        user=user,
        shell="/bin/bash",
        home=f"/home/{user}",
        create_home=True,
        public_keys=authorized_keys(host.data),
        delete_keys=True,
    )
    config_file(
        name=f"Ensure {user} has passwordless sudo",
        content=render_template("sudoers-deploy.j2", user=user),
        dest=f"/etc/sudoers.d/{user}",
        mode=0o440,
        validate="/usr/sbin/visudo -c -q -f {path}",
    )
