"""Redis for the app's job queue and caches: Debian's redis-server (or valkey-server,
`redis_server`) on the `redis_group` hosts (the db group by default), password required,
persistent (AOF + RDB).

It listens on the host's private address and on 127.0.0.1 only; the firewall matrix
(hardening_firewall_matrix) decides which roles reach its port. The password comes from
the secrets file (REDIS_PASSWORD) and lands only in the config file, mode 0640
root:redis, never on a command line.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, systemd

from ..errors import refuse
from ..facts import AptPackageVersions, os_description
from ..operations.config_file import config_file, render_template
from ..secrets import SecretsError, load_secrets

DEFAULTS = {
    # The inventory group whose hosts run Redis (deploys/provision.py dispatches on it).
    "redis_group": "db",
    # TCP port; open it to the roles that need it in hardening_firewall_matrix.
    "redis_port": 6379,
    # RDB snapshot schedule: "seconds changes" pairs, as redis.conf's `save`.
    "redis_save": "3600 1 300 100 60 10000",
    # When the append-only file is flushed to disk: "always", "everysec" or "no".
    "redis_appendfsync": "everysec",
    # Memory cap such as "256mb" ("" none); when full, writes fail (never evicted).
    "redis_maxmemory": "",
    # "redis" (Debian's redis-server) or "valkey" (valkey-server, packaged from Debian 13
    # on; same protocol and settings). Refused while planning where the host's release
    # packages no such server, or where the host runs the other one (a data migration).
    "redis_server": "redis",
}

SERVERS = ("redis", "valkey")
APPENDFSYNC_CHOICES = ("always", "everysec", "no")
# Redis has no config-test mode, but a bad line makes it exit at once with "FATAL CONFIG
# FILE ERROR". So the staged file is loaded by a throwaway server with no TCP port (a
# private unix socket instead), no persistence, no log file and its own pid file; still
# running after the timeout means the file was accepted (exit 124 from `timeout`).
VALIDATE = (
    "( check=$(mktemp -d) && timeout 1 {binary} {{path}} --port 0 "
    '--unixsocket "$check/redis.sock" --pidfile "$check/redis.pid" --dir "$check" '
    "--save '' --appendonly no --logfile '' --supervised no >&2; "
    'status=$?; rm -rf "$check"; test $status = 124 )'
)


def server_layout(server: str) -> dict[str, str]:
    """Where Debian's package of `server` (redis or valkey) keeps things: the two
    packages share their layout, with the server's name in every path."""
    return {
        "package": f"{server}-server",
        "service": f"{server}-server.service",
        "binary": f"/usr/bin/{server}-server",
        "config": f"/etc/{server}/{server}.conf",
        "group": server,
        "pidfile": f"/run/{server}/{server}-server.pid",
        "logfile": f"/var/log/{server}/{server}-server.log",
        "dir": f"/var/lib/{server}",
    }


def server_problem(server: str, chosen: dict, other: dict, os_name: str) -> str | None:
    """Why `server` cannot run on this host, from the AptPackageVersions facts of its
    package (`chosen`) and of the other server's (`other`); None when it can."""
    if server not in SERVERS:
        return f"redis_server must be one of {', '.join(SERVERS)}, got {server!r}"
    package = server_layout(server)["package"]
    if not chosen["installed"] and not chosen["candidate"]:
        return f"redis_server = {server!r}, but this host's {os_name} packages no {package}"
    if other["installed"]:
        (other_server,) = set(SERVERS) - {server}
        other_package = server_layout(other_server)["package"]
        return (
            f"redis_server = {server!r}, but this host runs {other_package}: moving its data "
            f"to {package} is a migration the kit leaves to you (then remove {other_package})"
        )
    return None


def redis_settings(data, server_problems: list[str] = ()) -> dict:
    """What the template needs, checked first: a problem stops the run while planning."""
    errors = list(server_problems)
    if not data.get("private_ip"):
        errors.append(f"{host.name}: private_ip is not set; Redis binds to it (inventory)")
    if data.redis_appendfsync not in APPENDFSYNC_CHOICES:
        errors.append(
            f"redis_appendfsync must be one of {', '.join(APPENDFSYNC_CHOICES)}, "
            f"got {data.redis_appendfsync!r}"
        )
    try:
        password = load_secrets(data.app_secrets_file).get("REDIS_PASSWORD", "")
    except SecretsError as error:
        errors.append(str(error))
        password = ""
    else:
        if not password:
            errors.append(
                f"REDIS_PASSWORD is missing from the secrets file "
                f"{data.app_secrets_file or '(app_secrets_file is not set)'}"
            )
        elif any(c.isspace() or c in "\"'\\" for c in password):
            errors.append("REDIS_PASSWORD must not contain spaces, quotes or backslashes")
    if errors:
        refuse(errors)
    return {
        "bind": ["127.0.0.1", data.private_ip],
        "port": int(data.redis_port),
        "password": password,
        "save": data.redis_save,
        "appendfsync": data.redis_appendfsync,
        "maxmemory": data.redis_maxmemory,
        **server_layout(data.redis_server),
    }


@deploy("Redis", data_defaults=DEFAULTS)
def redis() -> None:
    server = host.data.redis_server
    other = "valkey" if server == "redis" else "redis"
    problem = server_problem(
        server,
        host.get_fact(AptPackageVersions, package=f"{server}-server"),
        host.get_fact(AptPackageVersions, package=f"{other}-server"),
        os_description(host.get_fact(LinuxDistribution)),
    )
    settings = redis_settings(host.data, [f"redis on {host.name}: {problem}"] if problem else [])
    # Installed first: the package creates the user the config file belongs to.
    apt.packages(
        name=f"Ensure {settings['package']} is installed",
        packages=[settings["package"]],
        no_recommends=True,
    )
    configuration = config_file(
        name=f"Ensure {settings['package']}'s configuration is current, valid, and private",
        content=render_template("redis.conf.j2", **settings),
        dest=settings["config"],
        mode=0o640,
        user="root",
        group=settings["group"],
        validate=VALIDATE.format(binary=settings["binary"]),
        secrets=[settings["password"]],
    )
    systemd.service(
        name=f"Ensure {settings['package']} is running with the current configuration",
        service=settings["service"],
        running=True,
        enabled=True,
        restarted=configuration.will_change,
    )
