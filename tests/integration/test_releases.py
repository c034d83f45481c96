"""Debian releases: each host runs the release the sandbox made it with, and the services
the kit installed run the versions docs/supported-releases.md lists for that release."""

from __future__ import annotations

import re

import pytest

from .sandbox_world import REPO_ROOT, pyinfra

pytestmark = pytest.mark.every_release

DOC = REPO_ROOT / "docs" / "supported-releases.md"
PROVISION_DB = ("inventories/sandbox.py", "deploys/provision.py", "--limit", "db1")


def documented_versions() -> dict[str, dict[str, str]]:
    """The doc's table as {component: {codename: version}}, e.g. {"HAProxy": {"trixie":
    "3.0"}}, and {"Debian": {"trixie": "13"}} from its header."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in DOC.read_text().splitlines()
        if line.startswith("| ")
    ]
    header, body = rows[0], rows[1:]
    codenames = [re.search(r'"(\w+)"', cell).group(1) for cell in header[1:]]
    table = {"Debian": {c: re.search(r"\d+", h).group(0) for c, h in zip(codenames, header[1:])}}
    for row in body:
        component = row[0].split(" (")[0]
        table[component] = {c: cell.split()[0] for c, cell in zip(codenames, row[1:])}
    return table


VERSIONS = documented_versions()


def assert_version(component: str, host: str, release: str, running: str) -> None:
    documented = VERSIONS[component][release]
    # "3.0" covers "3.0.11-1+deb13u4" but not "3.01"; "17" covers "17".
    assert re.match(rf"{re.escape(documented)}(\D|$)", running), (
        f"{component} on {host} ({release}) runs {running!r}; "
        f"docs/supported-releases.md says {documented}"
    )


def test_every_host_runs_its_release_and_nothing_failed(fleet):
    for name in fleet.hosts():
        release = fleet.release(name)
        os_release = fleet.os_release(name)
        assert os_release["ID"] == "debian", os_release
        assert os_release["VERSION_CODENAME"] == release, (name, os_release)
        assert os_release["VERSION_ID"] == VERSIONS["Debian"][release], (name, os_release)
        # Provisioned, with every unit that should run running (none failed).
        code, state = fleet.sh(name, "systemctl is-system-running; systemctl --failed --plain")
        assert state.split()[0] == "running", (name, state)


def test_running_services_are_the_documented_versions(fleet):
    for name in fleet.hosts("db"):
        code, output = fleet.sh(
            name, "cd / && runuser -u postgres -- psql -X -A -t -c 'SHOW server_version_num'"
        )
        assert code == 0, output
        major = str(int(output.strip()) // 10000)
        assert_version("PostgreSQL", name, fleet.release(name), major)
        assert fleet.postgres_major(name) == int(major)
        running = re.search(
            r"^redis_version:(\S+)", fleet.redis_cli("INFO", "server", host=name), re.M
        )
        assert_version("Redis", name, fleet.release(name), running.group(1))
    for name in fleet.hosts("lb"):
        code, output = fleet.sh(
            name, "echo 'show info' | socat stdio unix-connect:/run/haproxy/admin.sock"
        )
        running = re.search(r"^Version: (\S+)", output, re.M)
        assert code == 0 and running, output
        assert_version("HAProxy", name, fleet.release(name), running.group(1))
    for name in fleet.hosts("web") + fleet.hosts("job"):
        code, output = fleet.sh(name, "docker version --format '{{.Server.Version}}'")
        assert code == 0, output
        assert_version("Docker engine", name, fleet.release(name), output.strip())
    for name in fleet.hosts():
        # sshd -V is not an option: `ssh -V` names the same OpenSSH build.
        code, output = fleet.sh(name, "ssh -V 2>&1; sshd -t && echo config-ok")
        running = re.match(r"OpenSSH_(\S+)", output)
        assert code == 0 and running and "config-ok" in output, (name, output)
        assert_version("OpenSSH server", name, fleet.release(name), running.group(1))


def test_postgres_files_and_unit_follow_the_running_major(fleet):
    major = fleet.postgres_major("db1")
    code, output = fleet.sh(
        "db1",
        f"systemctl is-active postgresql@{major}-main; "
        f"stat -c '%U %a' /etc/postgresql/{major}/main/conf.d/90-deploykit.conf "
        f"/etc/postgresql/{major}/main/tls/server.key; "
        "cd / && runuser -u postgres -- psql -X -A -t -c 'SHOW ssl'",
    )
    assert output.split() == ["active", "postgres", "644", "postgres", "600", "on"], output


def test_a_pinned_postgres_version_the_host_lacks_is_refused_while_planning(fleet):
    running = fleet.postgres_major("db1")
    other = {"15": "17", "17": "15"}.get(str(running), "15")
    name = f"Debian {VERSIONS['Debian'][fleet.release('db1')]} ({fleet.release('db1')})"
    _, before = fleet.sh("db1", "ls -1 /etc/postgresql; ls /usr/lib/postgresql")
    run = pyinfra(*PROVISION_DB, "--data", f"postgres_version={other}")
    assert run.returncode != 0
    assert (
        f"postgres on db1: postgres_version = {other}, but this host's {name} packages "
        f"PostgreSQL {running}: set postgres_version = {running} or 0 (the host's own)"
    ) in run.output, run.output[-3000:]
    assert "Starting operation" not in run.output
    # Nothing was installed: no second cluster, no other server package.
    assert fleet.sh("db1", "ls -1 /etc/postgresql; ls /usr/lib/postgresql")[1] == before


def test_a_pinned_postgres_version_the_host_runs_changes_nothing(fleet):
    run = pyinfra(*PROVISION_DB, "--data", f"postgres_version={fleet.postgres_major('db1')}")
    assert run.returncode == 0, run.failure_excerpt()
    assert run.grand_total()["changed"] == 0, run.changed_operations()


def test_valkey_runs_where_the_release_packages_it(fleet):
    """On job1 (no Redis there): Valkey where its release packages it, else a refusal."""
    release = fleet.release("job1")
    valkey = ("--limit", "job1", "--data", "redis_group=job", "--data", "redis_server=valkey")
    run = pyinfra("inventories/sandbox.py", "deploys/provision.py", *valkey)
    if VERSIONS["Valkey"][release] == "-":
        assert run.returncode != 0
        debian = f"Debian {VERSIONS['Debian'][release]} ({release})"
        assert (
            f"redis on job1: redis_server = 'valkey', but this host's {debian} packages no "
            "valkey-server"
        ) in run.output, run.output[-3000:]
        assert "Starting operation" not in run.output
        return
    try:
        assert run.returncode == 0, run.failure_excerpt()
        password = fleet.secrets()["REDIS_PASSWORD"]
        auth = {"REDISCLI_AUTH": password, "VALKEYCLI_AUTH": password}
        result = fleet.container("job1").exec_run(
            ["valkey-cli", "--no-auth-warning", "INFO", "server"], environment=auth
        )
        info = result.output.decode()
        running = re.search(r"^valkey_version:(\S+)", info, re.M)
        assert result.exit_code == 0 and running, info
        assert_version("Valkey", "job1", release, running.group(1))
        _, refused = fleet.sh("job1", "valkey-cli PING")
        assert "NOAUTH" in refused, refused
        code, output = fleet.sh(
            "job1",
            "systemctl is-active valkey-server; stat -c '%a %U %G' /etc/valkey/valkey.conf; "
            "systemctl is-active redis-server",
        )
        assert output.split() == ["active", "640", "root", "valkey", "inactive"], output
        again = pyinfra("inventories/sandbox.py", "deploys/provision.py", *valkey)
        assert again.returncode == 0, again.failure_excerpt()
        assert again.grand_total()["changed"] == 0, again.changed_operations()
    finally:
        # job1 as it was: no key-value server.
        fleet.sh(
            "job1",
            "systemctl disable --now valkey-server; "
            "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q valkey-server valkey-tools; "
            "rm -rf /etc/valkey /var/lib/valkey /var/log/valkey",
        )
    # db1 runs Redis: switching it is a migration, refused while planning.
    refused = pyinfra(
        "inventories/sandbox.py",
        "deploys/provision.py",
        "--limit",
        "db1",
        "--data",
        "redis_server=valkey",
    )
    assert refused.returncode != 0
    assert "redis on db1: redis_server = 'valkey', but this host runs redis-server" in (
        refused.output
    ), refused.output[-3000:]
