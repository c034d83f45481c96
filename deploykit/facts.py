"""Facts the deploys read during planning. Facts only read; they never change a host."""

from __future__ import annotations

import shlex
from contextlib import contextmanager

from pyinfra import state
from pyinfra.api import FactBase

from .commands.accessories import list_accessories
from .commands.containers import label_value, list_release_containers, running_versions
from .commands.images import Version
from .commands.haproxy import parse_show_servers, show_servers
from .commands.postgres import parse_role_state, psql_query_as_postgres, role_state_query
from .commands.scheduled_jobs import list_installed, parse_job_status, status_script
from .commands.workers import WORKER_ROLE

# Reads each Docker client folder's config.json; prints modes, owners and a SHA-256 of the
# credential stored for the registry, never the credential (base64 of user:password).
# One line per finding, tab-separated, the folder always second: "seen", then "folder"
# and "file" with "MODE OWNER", and "auth" with the SHA-256 of the stored credential
# (never the credential itself). Shell and jq only: hosts need not have python3, and jq
# is what the Docker engine's component installs (a host without it yet reads as never
# logged in, which a dry run then plans to fix).
_CLIENT_AUTHS_SCRIPT = r"""
key=$1; shift
for folder in "$@"; do
  printf 'seen\t%s\n' "$folder"
  [ -e "$folder" ] && printf 'folder\t%s\t%s\n' "$folder" "$(stat -c '%a %U' "$folder")"
  config="$folder/config.json"
  [ -e "$config" ] || continue
  printf 'file\t%s\t%s\n' "$folder" "$(stat -c '%a %U' "$config")"
  auth=$(jq -j --arg key "$key" '.auths[$key].auth // empty' "$config" 2>/dev/null) || auth=
  [ -n "$auth" ] || continue
  digest=$(printf %s "$auth" | sha256sum | cut -d' ' -f1)
  printf 'auth\t%s\t%s\n' "$folder" "$digest"
done
true
"""


class DockerClientAuths(FactBase):
    """For each Docker client folder (~/.docker): {"folder": [mode, owner], "file":
    [mode, owner] of its config.json, "auth_sha256": digest of the credential stored for
    `key`}, each present only when it exists. Read as root (the folders are private)."""

    def command(self, key: str, folders: tuple[str, ...]) -> str:
        words = ["sh", "-c", _CLIENT_AUTHS_SCRIPT, "sh", key, *folders]
        return " ".join(shlex.quote(word) for word in words)

    def process(self, output):
        found: dict[str, dict] = {}
        for line in "\n".join(output).splitlines():
            kind, folder, *values = line.split("\t")
            entry = found.setdefault(folder, {})
            if kind in ("folder", "file"):
                entry[kind] = values[0].split()
            elif kind == "auth":
                entry["auth_sha256"] = values[0]
        return found


# How many reads of secret-bearing facts are in progress (planning runs one greenlet per
# host), and whether pyinfra printed fact output before the first one began.
_secret_reads = 0
_printed_before = False


@contextmanager
def output_not_printed():
    """Read facts whose output holds secrets (a private file's contents, a password's
    SCRAM verifier) without pyinfra printing that output: at -vvv it prints every
    fact's output (State.print_fact_output), with no way to exempt one fact. Greenlets
    may overlap here: printing comes back when the last of them is done."""
    global _secret_reads, _printed_before
    if _secret_reads == 0:
        _printed_before = getattr(state, "print_fact_output", False)
    _secret_reads += 1
    if _printed_before:
        state.print_fact_output = False
    try:
        yield
    finally:
        _secret_reads -= 1
        if _secret_reads == 0 and _printed_before:
            state.print_fact_output = True


def get_secret_fact(host, fact, **arguments):
    """host.get_fact(fact, ...) for a fact whose output holds secrets: never printed."""
    with output_not_printed():
        return host.get_fact(fact, **arguments)


class ReleaseLog(FactBase):
    """Versions (TAG@DIGEST, or TAG before pinning) this host has run, oldest first
    (written by the rolling deploy)."""

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


class RunningAppVersion(FactBase):
    """Version (tag and digest) of the running app container, or None."""

    role = "app"

    def command(self) -> str:
        return f"{running_versions(self.role)} 2>/dev/null || true"

    def process(self, output):
        versions = [line.strip() for line in output if line.strip()]
        return Version.parse(versions[-1]) if versions else None


class RunningWorkerVersion(RunningAppVersion):
    """Version of the running job worker containers (the app image), or None."""

    role = WORKER_ROLE


class HaproxyServers(FactBase):
    """{server: (status, sessions)} of a backend, from the runtime API; None when the
    API does not answer (HAProxy not installed or not running)."""

    def command(self, socket: str, backend: str) -> str:
        # Right after a reload (a provision run just before) the new worker may not have
        # bound the socket yet: ask again for a few seconds before calling it absent.
        return (
            "for attempt in $(seq 20); do "
            f"out=$({show_servers(socket, backend)} 2>/dev/null); "
            '[ -n "$out" ] && { echo "$out"; break; }; sleep 0.25; done; true'
        )

    def process(self, output):
        text = "\n".join(output)
        return parse_show_servers(text) if text.strip() else None


class DeployContainers(FactBase):
    """Containers the deploys created (by label), as dicts: name, role, tag, status,
    digest ("" when unpinned)."""

    @staticmethod
    def default():
        return []

    def command(self) -> str:
        return f"{list_release_containers()} 2>/dev/null || true"

    def process(self, output):
        containers = []
        for line in output:
            fields = line.split("\t")
            if len(fields) == 5:
                name, role, tag, status, digest = fields
                containers.append(
                    {
                        "name": name,
                        "role": role,
                        "tag": tag,
                        "status": status,
                        "digest": label_value(digest),
                    }
                )
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
        return psql_query_as_postgres(role_state_query(role, database))

    @staticmethod
    def default():
        return {"role": None, "database_owner": None}

    def process(self, output):
        return parse_role_state(list(output))


class PostgresMajorVersions(FactBase):
    """PostgreSQL server major versions on the host, as Debian lays them out:
    {"installed": [15, 17], "packaged": 17}. installed: majors whose server binary is
    there (/usr/lib/postgresql/N/bin/postgres); packaged: the major that Debian's
    `postgresql` package depends on (the release's own), or None when apt knows no such
    package (its package lists are empty)."""

    @staticmethod
    def default():
        return {"installed": [], "packaged": None}

    def command(self) -> str:
        return (
            "for binary in /usr/lib/postgresql/*/bin/postgres; do "
            '[ -x "$binary" ] && echo "installed $binary"; done; '
            "apt-cache show --no-all-versions postgresql 2>/dev/null "
            "| sed -n 's/^Depends:.*postgresql-\\([0-9][0-9]*\\).*/packaged \\1/p'; true"
        )

    def process(self, output):
        return parse_postgres_major_versions(list(output))


def parse_postgres_major_versions(lines: list[str]) -> dict:
    installed, packaged = set(), None
    for line in lines:
        kind, _, value = line.strip().partition(" ")
        if kind == "installed":
            major = value.removeprefix("/usr/lib/postgresql/").split("/", 1)[0]
            if major.isdigit():
                installed.add(int(major))
        elif kind == "packaged" and value.isdigit():
            packaged = int(value)
    return {"installed": sorted(installed), "packaged": packaged}


class AptPackageVersions(FactBase):
    """One package as apt sees it: {"installed": version or None, "candidate": version or
    None}; candidate is None when no configured source has the package (or apt's package
    lists are empty)."""

    @staticmethod
    def default():
        return {"installed": None, "candidate": None}

    def command(self, package: str) -> str:
        return f"LC_ALL=C apt-cache policy {shlex.quote(package)} 2>/dev/null; true"

    def process(self, output):
        return parse_apt_policy(list(output))


def parse_apt_policy(lines: list[str]) -> dict:
    versions = {"installed": None, "candidate": None}
    for line in lines:
        key, _, value = line.strip().partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in versions and versions[key] is None and value and value != "(none)":
            versions[key] = value
    return versions


def os_description(distribution: dict) -> str:
    """pyinfra's LinuxDistribution fact -> "Debian 13 (trixie)"."""
    codename = (distribution.get("release_meta") or {}).get("VERSION_CODENAME")
    words = [distribution.get("name") or "this OS", str(distribution.get("major") or "")]
    described = " ".join(word for word in words if word)
    return f"{described} ({codename})" if codename else described


class InstalledScheduledJobs(FactBase):
    """The names of the scheduled jobs whose timers are installed on the host."""

    def command(self) -> str:
        return list_installed()

    @staticmethod
    def default():
        return []

    def process(self, output):
        return sorted(line.strip() for line in output if line.strip())


class ScheduledJobsStatus(FactBase):
    """Each installed scheduled job: schedule, next run, systemd's state, last result
    (see commands.scheduled_jobs.parse_job_status)."""

    def command(self, state_dir: str) -> str:
        return status_script(state_dir)

    @staticmethod
    def default():
        return []

    def process(self, output):
        return parse_job_status("\n".join(output))
