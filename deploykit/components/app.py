"""What a web host needs before its app pair can be swapped: the env file, the network,
the release log, and the images, pulled ahead of the roll on every host at once."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import docker as docker_operations
from pyinfra.operations import files

from ..operations.config_file import config_file, render_template
from ..operations.images import image_pulled

DEFAULTS = {
    # The app's image repository, registry included, without a tag.
    "app_image": "",
    # The nginx sidecar's image, with its tag.
    "app_nginx_image": "",
    # Port the app listens on inside its container.
    "app_port": 8000,
    # Per-host Docker network joining each app container to its nginx.
    "app_network": "deploykit-app",
    # The environment file given to containers with --env-file; only deploy reads it.
    "app_env_file": "/etc/deploykit/app.env",
    # Plain (non-secret) environment for the app.
    "app_env": {},
    # Dotenv file of secrets, relative to the repository, encrypted by git-crypt
    # (README: Secrets). Its values reach hosts only inside private files.
    "app_secrets_file": "",
    # The tags a host has run, oldest first: rollback reads it.
    "app_release_log": "/var/lib/deploykit/releases",
}


@deploy("App host", data_defaults=DEFAULTS)
def app_host(images: list[str]) -> None:
    user = host.data.get("ssh_user") or "deploy"
    files.directory(
        name="Ensure the release log's folder belongs to the deploy user",
        path="/var/lib/deploykit",
        user=user,
        group=user,
        mode="0750",
    )
    config_file(
        name="Ensure the app's environment file is current and private to the deploy user",
        content=render_template("app.env.j2", env=host.data.app_env),
        dest=host.data.app_env_file,
        user=user,
        group=user,
        mode=0o600,
    )
    docker_operations.network(
        name=f"Ensure the Docker network {host.data.app_network} exists",
        network=host.data.app_network,
    )
    for image in images:
        image_pulled(name=f"Ensure {image} is on the host", image=image)
