"""Facts the deploys read during planning. Facts only read; they never change a host."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from .commands.docker import list_accessories, running_app_tag

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def manifest_url(image_repository: str, tag: str, insecure_registries: list[str]) -> str:
    """registry:5000/deploykit/app + v2 -> http://registry:5000/v2/deploykit/app/manifests/v2"""
    registry, _, repository = image_repository.partition("/")
    if not repository or ("." not in registry and ":" not in registry and registry != "localhost"):
        raise ValueError(
            f"app_image {image_repository!r} must name its registry, "
            "like registry.example.com/team/app"
        )
    scheme = "http" if registry in insecure_registries else "https"
    return f"{scheme}://{registry}/v2/{repository}/manifests/{tag}"


class RegistryTagStatus(FactBase):
    """HTTP status of the tag's manifest in the registry, as seen from the host:
    200 (present), 404 (unknown tag), 000 (registry unreachable)."""

    def command(self, url: str) -> str:
        return (
            f"curl -s -o /dev/null -m 10 -w '%{{http_code}}' --head "
            f"-H {shlex.quote('Accept: ' + MANIFEST_TYPES)} {shlex.quote(url)} || true"
        )

    def process(self, output):
        return "".join(output).strip() or "000"


class ReleaseLog(FactBase):
    """Tags this host has run, oldest first (written by the rolling deploy)."""

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


class RunningAppTag(FactBase):
    """Tag of the running app container, or None."""

    role = "app"

    def command(self) -> str:
        return f"{running_app_tag(self.role)} 2>/dev/null || true"

    def process(self, output):
        tags = [line.strip() for line in output if line.strip()]
        return tags[-1] if tags else None


class RunningWorkerTag(RunningAppTag):
    """Tag of the running job worker containers (the app image), or None."""

    role = "worker"


class HaproxyServers(FactBase):
    """{server: (status, sessions)} of a backend, from the runtime API; None when the
    API does not answer (HAProxy not installed or not running)."""

    def command(self, socket: str, backend: str) -> str:
        from .commands.haproxy import show_servers

        # Right after a reload (a provision run just before) the new worker may not have
        # bound the socket yet: ask again for a few seconds before calling it absent.
        return (
            "for attempt in $(seq 20); do "
            f"out=$({show_servers(socket, backend)} 2>/dev/null); "
            '[ -n "$out" ] && { echo "$out"; break; }; sleep 0.25; done; true'
        )

    def process(self, output):
        from .commands.haproxy import parse_show_servers

        text = "\n".join(output)
        return parse_show_servers(text) if text.strip() else None


class DeployContainers(FactBase):
    """Containers the deploys created (by label), as dicts: name, role, tag, status."""

    @staticmethod
    def default():
        return []

    def command(self) -> str:
        return (
            "docker ps -a --filter label=io.deploykit.role --format "
            '\'{{.Names}}\t{{.Label "io.deploykit.role"}}\t{{.Label "io.deploykit.tag"}}'
            "\t{{.Status}}' 2>/dev/null || true"
        )

    def process(self, output):
        containers = []
        for line in output:
            fields = line.split("\t")
            if len(fields) == 4:
                name, role, tag, status = fields
                containers.append({"name": name, "role": role, "tag": tag, "status": status})
        return containers


class AccessoryContainers(FactBase):
    """{container name: (accessory, spec hash, state)} of the host's accessory containers;
    {} where Docker is not installed yet (a first provision installs it in the same run)."""

    default = dict

    def requires_command(self) -> str:
        return "docker"

    def command(self) -> str:
        return f"{list_accessories()} 2>/dev/null || true"

    def process(self, output):
        containers = {}
        for line in output:
            words = line.split()
            if len(words) == 4:
                containers[words[0]] = (words[1], words[2], words[3])
        return containers


class PostgresRoleState(FactBase):
    """The app's role and database as PostgreSQL sees them: {"role": {"can_login",
    "verifier"} or None, "database_owner": name or None}. Both None while the server is
    not installed or not running."""

    def command(self, role: str, database: str) -> str:
        from .commands.postgres import psql_query_as_postgres, role_state_query

        return psql_query_as_postgres(role_state_query(role, database))

    @staticmethod
    def default():
        return {"role": None, "database_owner": None}

    def process(self, output):
        from .commands.postgres import parse_role_state

        return parse_role_state(list(output))
