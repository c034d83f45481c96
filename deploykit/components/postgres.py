"""PostgreSQL on the db group: Debian's server, the app's role and database, TLS-only
access from the app's hosts, and nightly dumps with a restore script.

The server listens on the host's private address and localhost only. pg_hba admits the
app's role to the app's database from each client host's private address over TLS
(scram-sha-256), the postgres superuser over the local socket (peer), and rejects
everything else. A change to pg_hba or the certificate is a reload; a change to the
server settings (listen_addresses) is a restart.

The role's password is read from the secrets file on the machine running pyinfra and
never reaches the host: only its SCRAM verifier does (deploykit/commands/postgres.py).
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, systemd

from ..commands.postgres import is_identifier
from ..errors import refuse
from ..facts import PostgresMajorVersions, os_description
from ..operations.config_file import config_file, render_template
from ..operations.postgres import role_and_database
from ..paths import REPO_ROOT
from ..secrets import PRIVATE_KEY, SecretsError, load_secrets, read_private_key_file

DEFAULTS = {
    # PostgreSQL major version (package postgresql-N). 0: the one the host runs, else the
    # one its Debian release packages (docs/supported-releases.md). A pinned version the
    # host neither runs nor packages is refused while planning.
    "postgres_version": 0,
    # The app's database and the role that owns it and logs in to it.
    "postgres_database": "app",
    "postgres_user": "app",
    # Groups whose hosts may connect (each from its private_ip, over TLS only).
    "postgres_client_groups": ["web", "job"],
    # PEM certificate and private key of the server, relative to the repository.
    # Required: clients are only admitted over TLS. Keep the key in git-crypt.
    "postgres_tls_certificate": "",
    "postgres_tls_key": "",
    # Where the nightly dumps go (pg_dump's custom format, private to postgres).
    "postgres_backup_dir": "/var/backups/postgresql",
    # Dumps kept: each backup deletes all but the newest N.
    "postgres_backup_keep": 7,
    # When the backup runs, as a systemd OnCalendar expression (host's time zone).
    "postgres_backup_schedule": "*-*-* 03:00:00",
}

PORT = 5432
BACKUP_SCRIPT = "/usr/local/sbin/deploykit-pg-backup"
RESTORE_SCRIPT = "/usr/local/sbin/deploykit-pg-restore"
BACKUP_UNIT = "deploykit-pg-backup"
SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]+\Z")


def client_hosts(groups: list[str]) -> list[dict]:
    """Each host of the client groups, in inventory order, by its private address."""
    clients: dict[str, dict] = {}
    for group in groups:
        for member in inventory.get_group(group, default=None) or []:
            clients.setdefault(
                member.name, {"name": member.name, "address": member.data.get("private_ip")}
            )
    return list(clients.values())


def postgres_major(setting: int, versions: dict, os_name: str) -> int | str:
    """The PostgreSQL major version to manage on a host, or why there is none.

    + setting: postgres_version (0: follow the host)
    + versions: the PostgresMajorVersions fact ({"installed": [...], "packaged": N})
    + os_name: the host's OS, for the message ("Debian 13 (trixie)")

    With 0, a major already installed wins over the release's own: an upgraded OS keeps
    the cluster that holds the data (pg_upgradecluster is the operator's decision), never
    a second, empty one beside it.
    """
    installed, packaged = versions["installed"], versions["packaged"]
    if setting:
        if setting in installed or setting == packaged:
            return setting
        offered = (
            f"packages PostgreSQL {packaged}"
            if packaged
            else "has no `postgresql` package in apt's lists (are they empty?)"
        )
        others = [str(major) for major in installed if major != packaged]
        runs = f" and has {', '.join(others)} installed" if others else ""
        fix = f"set postgres_version = {packaged} or 0 (the host's own)" if packaged else ""
        return f"postgres_version = {setting}, but this host's {os_name} {offered}{runs}" + (
            f": {fix}" if fix else ""
        )
    if installed:
        return max(installed)
    if packaged:
        return packaged
    return (
        f"apt on this {os_name} host knows no `postgresql` package, so its version is "
        "unknown: are its package lists empty? (bootstrap runs apt-get update)"
    )


def settings_problems(name: str, data, clients: list[dict], secrets: dict) -> list[str]:
    """Everything wrong with this host's postgres settings, each naming its culprit."""
    problems = []
    for key in ("postgres_database", "postgres_user"):
        if not is_identifier(str(data.get(key))):
            problems.append(f"{key} {data.get(key)!r} must be a lower-case identifier")
    for key in ("postgres_tls_certificate", "postgres_tls_key"):
        if not data.get(key):
            problems.append(f"{key} is empty: clients are admitted over TLS only")
        elif not (REPO_ROOT / data.get(key)).is_file():
            problems.append(f"{key}: {data.get(key)} does not exist")
    if not SAFE_PATH.match(str(data.postgres_backup_dir)):
        problems.append(f"postgres_backup_dir {data.postgres_backup_dir!r} is not a plain path")
    if not isinstance(data.postgres_backup_keep, int) or data.postgres_backup_keep < 1:
        problems.append(f"postgres_backup_keep must be at least 1, got {data.postgres_backup_keep}")
    if "\n" in str(data.postgres_backup_schedule) or not data.postgres_backup_schedule:
        problems.append("postgres_backup_schedule must be one OnCalendar expression")
    for owner, address in [(name, data.get("private_ip"))] + [
        (c["name"], c["address"]) for c in clients
    ]:
        try:
            ipaddress.IPv4Address(address or "")
        except ValueError:
            problems.append(f"host {owner}: private_ip {address!r} is not an IPv4 address")
    password = secrets.get("DB_PASSWORD", "")
    if not password:
        problems.append(
            f"DB_PASSWORD is missing from {data.app_secrets_file or 'app_secrets_file'}"
        )
    elif not (password.isascii() and password.isprintable()):
        problems.append("DB_PASSWORD must be printable ASCII (SCRAM's SASLprep is not applied)")
    return problems


@deploy("PostgreSQL", data_defaults=DEFAULTS)
def postgres() -> None:
    data = host.data
    clients = client_hosts(list(data.postgres_client_groups))
    try:
        secrets = load_secrets(data.app_secrets_file)
    except SecretsError as error:
        refuse([str(error)])
    problems = settings_problems(host.name, data, clients, secrets)
    version = postgres_major(
        data.postgres_version,
        host.get_fact(PostgresMajorVersions),
        os_description(host.get_fact(LinuxDistribution)),
    )
    if isinstance(version, str):
        problems.append(version)
    if problems:
        refuse([f"postgres on {host.name}: {problem}" for problem in problems])

    config_dir = f"/etc/postgresql/{version}/main"
    service = f"postgresql@{version}-main.service"
    apt.packages(
        name=f"Ensure PostgreSQL {version} is installed",
        packages=[f"postgresql-{version}"],
        no_recommends=True,
    )

    files.directory(
        name="Ensure PostgreSQL's TLS folder is private to postgres",
        path=f"{config_dir}/tls",
        user="postgres",
        group="postgres",
        mode="0750",
    )
    certificate = config_file(
        name="Ensure PostgreSQL's TLS certificate is installed",
        content=(REPO_ROOT / data.postgres_tls_certificate).read_text(),
        dest=f"{config_dir}/tls/server.crt",
        user="postgres",
        group="postgres",
        mode=0o644,
    )
    try:
        key_pem = read_private_key_file(data.postgres_tls_key, "postgres_tls_key")
    except SecretsError as error:
        refuse([str(error)])
    key = config_file(
        name="Ensure PostgreSQL's TLS key is installed, private to postgres",
        content=key_pem,
        dest=f"{config_dir}/tls/server.key",
        user="postgres",
        group="postgres",
        mode=0o600,
        secrets=PRIVATE_KEY.findall(key_pem),
    )
    server_settings = config_file(
        name="Ensure PostgreSQL listens on the private address and localhost, TLS on",
        content=render_template(
            "postgresql-deploykit.conf.j2",
            listen_addresses=["localhost", data.private_ip],
            port=PORT,
            certificate_file=f"{config_dir}/tls/server.crt",
            key_file=f"{config_dir}/tls/server.key",
        ),
        dest=f"{config_dir}/conf.d/90-deploykit.conf",
        user="postgres",
        group="postgres",
        # The server parses the staged file as its configuration and prints one setting:
        # a syntax error or a bad value fails here, before the file is used.
        validate=(
            f"cd / && runuser -u postgres -- /usr/lib/postgresql/{version}/bin/postgres "
            f"-D /var/lib/postgresql/{version}/main -c config_file={{path}} -C listen_addresses"
        ),
    )
    access = config_file(
        name="Ensure only the app's hosts reach the app's database, over TLS",
        content=render_template(
            "pg_hba.conf.j2",
            clients=clients,
            database=data.postgres_database,
            role=data.postgres_user,
        ),
        dest=f"{config_dir}/pg_hba.conf",
        user="postgres",
        group="postgres",
        mode=0o640,
        # No validate: PostgreSQL (15 to 17) has no offline check for pg_hba
        # (pg_hba_file_rules reads the live file). Its lines come from checked settings:
        # identifiers and IPv4 addresses, refused during planning otherwise.
    )
    restart = server_settings.will_change
    systemd.service(
        name="Ensure PostgreSQL runs with the current settings",
        service=service,
        running=True,
        enabled=True,
        restarted=restart,
        # pg_hba and the TLS files are read again on a reload (SIGHUP).
        reloaded=not restart and (access.will_change or certificate.will_change or key.will_change),
    )
    role_and_database(
        name="Ensure the app's role and database exist, with the current password",
        role=data.postgres_user,
        database=data.postgres_database,
        password=secrets["DB_PASSWORD"],
    )
    backups(data)


def backups(data) -> None:
    """Nightly pg_dump with retention, and the restore script."""
    files.directory(
        name="Ensure the backup folder exists, private to postgres",
        path=data.postgres_backup_dir,
        user="postgres",
        group="postgres",
        mode="0700",
    )
    config_file(
        name="Ensure the backup script is current",
        content=render_template(
            "deploykit-pg-backup.sh.j2",
            database=data.postgres_database,
            backup_dir=data.postgres_backup_dir,
            keep=data.postgres_backup_keep,
        ),
        dest=BACKUP_SCRIPT,
        mode=0o755,
        validate="bash -n {path}",
    )
    config_file(
        name="Ensure the restore script is current",
        content=render_template("deploykit-pg-restore.sh.j2", owner=data.postgres_user),
        dest=RESTORE_SCRIPT,
        mode=0o755,
        validate="bash -n {path}",
    )
    unit = config_file(
        name="Ensure the backup service is current",
        content=render_template(
            "deploykit-pg-backup.service.j2",
            database=data.postgres_database,
            backup_dir=data.postgres_backup_dir,
            script=BACKUP_SCRIPT,
        ),
        dest=f"/etc/systemd/system/{BACKUP_UNIT}.service",
    )
    timer = config_file(
        name="Ensure the nightly backup timer is current",
        content=render_template(
            "deploykit-pg-backup.timer.j2",
            database=data.postgres_database,
            schedule=data.postgres_backup_schedule,
        ),
        dest=f"/etc/systemd/system/{BACKUP_UNIT}.timer",
        # The staged file's name is no unit name; its schedule is checked on its own.
        validate=(
            f"systemd-analyze calendar {shlex.quote(data.postgres_backup_schedule)} >/dev/null"
        ),
    )
    systemd.service(
        name="Ensure the nightly backup timer is active",
        service=f"{BACKUP_UNIT}.timer",
        running=True,
        enabled=True,
        daemon_reload=unit.will_change or timer.will_change,
        restarted=timer.will_change,
    )
