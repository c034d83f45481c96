"""What a web host needs before its app pair can be swapped: the env file, the network,
the release log, and the images, pulled ahead of the roll on every host at once.

The env file alone (``app_env_file``) is what every host running the app's image needs,
web and job hosts alike: provision renders it too, so ``--dry --diff`` shows a change
of settings or secrets before any deploy. How it is composed: deploykit/appenv.py."""

from __future__ import annotations

import posixpath
from functools import partial

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import docker as docker_operations
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from ..appenv import env_file_values, host_app_env
from ..commands.pairs import reload_nginx
from ..errors import refuse
from ..operations.config_file import config_file, render_template
from ..operations.images import image_pulled
from .docker import registry_logins
from .haproxy import DEFAULTS as HAPROXY_DEFAULTS
from .haproxy import read_repository_file

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
    # Plain (non-secret) environment for the app; values may refer to other variables
    # as ${NAME} or ${NAME:-default}, $$ for a literal $ (docs/operations.md:
    # Configuration and secrets).
    "app_env": {},
    # Dotenv file of secrets, relative to the repository, encrypted by git-crypt
    # (docs/operations.md: Secrets). Its values reach hosts only inside private files.
    "app_secrets_file": "",
    # The app's declaration of every variable it reads, with types (YAML;
    # docs/operations.md: Configuration and secrets).
    "app_env_spec": "app/Envfile.yml",
    # The tags a host has run, oldest first: rollback reads it. Its folder belongs to the
    # deploy user.
    "app_release_log": "/var/lib/deploykit/releases",
}


@deploy("App environment", data_defaults=DEFAULTS)
def app_env_file() -> None:
    user = host.data.get("ssh_user") or "deploy"
    app_env = host_app_env(host, inventory)
    if app_env.problems:
        # preflight(app_env_groups=...) has refused already, for every host at once;
        # this guards a deploy that forgot to ask it.
        refuse([f"host {host.name}: {problem}" for problem in app_env.problems])
    config_file(
        name="Ensure the app's environment file is current and private to the deploy user",
        content=render_template("app.env.j2", env=app_env.values),
        dest=host.data.app_env_file,
        user=user,
        group=user,
        mode=0o600,
        secrets=app_env.secret_values,
        old_secrets=partial(_old_secret_values, names=app_env.sensitive_names),
    )


def _old_secret_values(text: str, names: set[str]) -> list[str]:
    """The secrets the live env file holds, which may differ from the new ones."""
    return [value for name, value in env_file_values(text).items() if name in names]


@deploy("Web host TLS", data_defaults=HAPROXY_DEFAULTS)
def web_tls() -> None:
    """The certificate and key nginx serves HAProxy with (haproxy_backend_tls), in a
    root-only folder mounted read-only into nginx; a running nginx reloads a new one."""
    data = host.data
    if not data.haproxy_backend_tls:
        return
    folder = data.haproxy_backend_tls_dir
    files.directory(
        name="Ensure the folder of the web host's TLS certificate is private to root",
        path=folder,
        user="root",
        group="root",
        mode="0700",
    )
    certificate = config_file(
        name="Ensure the web host's TLS certificate (signed by the fleet's CA) is installed",
        content=read_repository_file(data, "haproxy_backend_certificate"),
        dest=f"{folder}/tls.crt",
        mode=0o644,
    )
    key_pem = read_repository_file(data, "haproxy_backend_key")
    key = config_file(
        name="Ensure the web host's TLS key is installed, readable by root only",
        content=key_pem,
        dest=f"{folder}/tls.key",
        mode=0o600,
        secrets=[key_pem.strip()],
    )
    server.shell(
        name="Ensure running nginx containers serve the current certificate (reload)",
        commands=[reload_nginx()],
        _if=any_changed(certificate, key),
    )


@deploy("App host", data_defaults=DEFAULTS)
def app_host(images: list[str]) -> None:
    user = host.data.get("ssh_user") or "deploy"
    app_env_file()
    if "web" in host.groups:
        # A new nginx starts with the certificate in place.
        web_tls()
    files.directory(
        name="Ensure the release log's folder belongs to the deploy user",
        path=posixpath.dirname(host.data.app_release_log),
        user=user,
        group=user,
        mode="0750",
    )
    docker_operations.network(
        name=f"Ensure the Docker network {host.data.app_network} exists",
        network=host.data.app_network,
    )
    # A password rotated since the last provision logs in again before the pulls.
    registry_logins()
    for image in images:
        image_pulled(name=f"Ensure {image} is on the host", image=image)
