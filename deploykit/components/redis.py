"""Redis for the app's job queue and caches: Debian's redis-server on the `redis_group`
hosts (the db group by default), password required, persistent (AOF + RDB).

It listens on the host's private address and on 127.0.0.1 only; the firewall matrix
(hardening_firewall_matrix) decides which roles reach its port. The password comes from
the secrets file (REDIS_PASSWORD) and lands only in the config file, mode 0640
root:redis, never on a command line.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

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
}

CONFIG_PATH = "/etc/redis/redis.conf"
APPENDFSYNC_CHOICES = ("always", "everysec", "no")
# Redis has no config-test mode, but a bad line makes it exit at once with "FATAL CONFIG
# FILE ERROR". So the staged file is loaded by a throwaway server with no TCP port (a
# private unix socket instead), no persistence, no log file and its own pid file; still
# running after the timeout means the file was accepted (exit 124 from `timeout`).
VALIDATE = (
    "( check=$(mktemp -d) && timeout 1 /usr/bin/redis-server {path} --port 0 "
    '--unixsocket "$check/redis.sock" --pidfile "$check/redis.pid" --dir "$check" '
    "--save '' --appendonly no --logfile '' --supervised no >&2; "
    'status=$?; rm -rf "$check"; test $status = 124 )'
)


def redis_settings(data) -> dict:
    """What the template needs, checked first: a problem stops the run while planning."""
    errors = []
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
        # Imported here: preflight imports config, which imports every component.
        from ..preflight import refuse

        refuse(errors)
    return {
        "bind": ["127.0.0.1", data.private_ip],
        "port": int(data.redis_port),
        "password": password,
        "save": data.redis_save,
        "appendfsync": data.redis_appendfsync,
        "maxmemory": data.redis_maxmemory,
    }


@deploy("Redis", data_defaults=DEFAULTS)
def redis() -> None:
    settings = redis_settings(host.data)
    # Installed first: the package creates the redis user the config file belongs to.
    apt.packages(
        name="Ensure Redis is installed",
        packages=["redis-server"],
        no_recommends=True,
    )
    configuration = config_file(
        name="Ensure Redis's configuration is current, valid, and private",
        content=render_template("redis.conf.j2", **settings),
        dest=CONFIG_PATH,
        mode=0o640,
        user="root",
        group="redis",
        validate=VALIDATE,
        secrets=[settings["password"]],
    )
    systemd.service(
        name="Ensure Redis is running with the current configuration",
        service="redis-server.service",
        running=True,
        enabled=True,
        restarted=configuration.will_change,
    )
