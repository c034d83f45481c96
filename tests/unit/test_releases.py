"""Versions come from facts read on the host, never from a constant: the facts' commands
and parsing, and what the components make of them on Debian 12 and 13."""

from __future__ import annotations

import pytest

from deploykit.components.docker import debian_docker_packages, docker_ce_source
from deploykit.components.postgres import postgres_major
from deploykit.components.redis import server_layout, server_problem
from deploykit.facts import (
    AptPackageVersions,
    PostgresMajorVersions,
    os_description,
    parse_apt_policy,
    parse_postgres_major_versions,
)

TRIXIE = {
    "name": "Debian",
    "major": 13,
    "minor": None,
    "release_meta": {"VERSION_ID": "13", "VERSION_CODENAME": "trixie", "ID": "debian"},
}
BOOKWORM = {
    "name": "Debian",
    "major": 12,
    "minor": None,
    "release_meta": {"VERSION_ID": "12", "VERSION_CODENAME": "bookworm", "ID": "debian"},
}


def test_postgres_versions_fact_command():
    assert PostgresMajorVersions().command() == (
        "for binary in /usr/lib/postgresql/*/bin/postgres; do "
        '[ -x "$binary" ] && echo "installed $binary"; done; '
        "apt-cache show --no-all-versions postgresql 2>/dev/null "
        "| sed -n 's/^Depends:.*postgresql-\\([0-9][0-9]*\\).*/packaged \\1/p'; true"
    )


def test_postgres_versions_fact_parses_installed_and_packaged_majors():
    lines = [
        "installed /usr/lib/postgresql/15/bin/postgres",
        "installed /usr/lib/postgresql/17/bin/postgres",
        "packaged 17",
    ]
    assert parse_postgres_major_versions(lines) == {"installed": [15, 17], "packaged": 17}
    assert parse_postgres_major_versions([]) == {"installed": [], "packaged": None}


def test_apt_policy_fact_command_and_parsing():
    assert AptPackageVersions().command("docker-cli") == (
        "LC_ALL=C apt-cache policy docker-cli 2>/dev/null; true"
    )
    output = [
        "redis-server:",
        "  Installed: 5:8.0.2-3+deb13u3",
        "  Candidate: 5:8.0.2-3+deb13u3",
        "  Version table:",
        " *** 5:8.0.2-3+deb13u3 500",
        "        500 http://deb.debian.org/debian trixie/main amd64 Packages",
        "        100 /var/lib/dpkg/status",
    ]
    assert parse_apt_policy(output) == {
        "installed": "5:8.0.2-3+deb13u3",
        "candidate": "5:8.0.2-3+deb13u3",
    }
    not_installed = ["valkey-server:", "  Installed: (none)", "  Candidate: 8.1.1+dfsg1-3"]
    assert parse_apt_policy(not_installed) == {"installed": None, "candidate": "8.1.1+dfsg1-3"}
    # A package no source has (docker-cli on Debian 12): apt-cache prints nothing.
    assert parse_apt_policy([]) == {"installed": None, "candidate": None}


def test_os_description_names_version_and_codename():
    assert os_description(TRIXIE) == "Debian 13 (trixie)"
    assert os_description(BOOKWORM) == "Debian 12 (bookworm)"


@pytest.mark.parametrize(
    "setting, installed, packaged, expected",
    [
        (0, [], 17, 17),  # a fresh Debian 13 host: the release's own
        (0, [], 15, 15),  # a fresh Debian 12 host
        (0, [15], 17, 15),  # upgraded to Debian 13: keeps the cluster with the data
        (0, [15, 17], 17, 17),  # after pg_upgradecluster
        (17, [], 17, 17),  # pinned, packaged
        (15, [15], 17, 15),  # pinned, installed though no longer packaged
    ],
)
def test_postgres_major_follows_the_host(setting, installed, packaged, expected):
    versions = {"installed": installed, "packaged": packaged}
    assert postgres_major(setting, versions, "Debian 13 (trixie)") == expected


def test_a_pinned_postgres_major_the_host_lacks_is_a_problem_naming_setting_and_release():
    versions = {"installed": [], "packaged": 17}
    assert postgres_major(15, versions, "Debian 13 (trixie)") == (
        "postgres_version = 15, but this host's Debian 13 (trixie) packages PostgreSQL 17: "
        "set postgres_version = 17 or 0 (the host's own)"
    )
    versions = {"installed": [16], "packaged": 15}
    assert postgres_major(17, versions, "Debian 12 (bookworm)") == (
        "postgres_version = 17, but this host's Debian 12 (bookworm) packages PostgreSQL 15 "
        "and has 16 installed: set postgres_version = 15 or 0 (the host's own)"
    )


def test_unknown_postgres_major_with_empty_apt_lists_is_a_problem():
    versions = {"installed": [], "packaged": None}
    assert "are its package lists empty?" in postgres_major(0, versions, "Debian 13 (trixie)")
    assert "has no `postgresql` package in apt's lists" in postgres_major(
        17, versions, "Debian 13 (trixie)"
    )


def test_docker_cli_is_added_where_it_is_a_package_of_its_own():
    trixie_cli = {"installed": None, "candidate": "26.1.5+dfsg1-9+deb13u1+b1"}
    assert debian_docker_packages(trixie_cli) == ["docker.io", "docker-cli"]
    assert debian_docker_packages({"installed": None, "candidate": None}) == ["docker.io"]


def test_docker_ce_source_names_the_hosts_codename():
    assert docker_ce_source(TRIXIE) == (
        "deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian "
        "trixie stable"
    )
    assert docker_ce_source(BOOKWORM).endswith(" bookworm stable")
    with pytest.raises(ValueError, match="names no VERSION_CODENAME"):
        docker_ce_source({"name": "Debian", "major": 13, "release_meta": {}})


NONE = {"installed": None, "candidate": None}
PACKAGED = {"installed": None, "candidate": "8.1.1+dfsg1-3+deb13u3"}
INSTALLED = {"installed": "5:8.0.2-3+deb13u3", "candidate": "5:8.0.2-3+deb13u3"}


def test_valkey_where_the_release_packages_it_and_the_host_runs_no_redis():
    assert server_problem("valkey", PACKAGED, NONE, "Debian 13 (trixie)") is None
    assert server_problem("redis", INSTALLED, NONE, "Debian 13 (trixie)") is None
    assert server_layout("valkey") == {
        "package": "valkey-server",
        "service": "valkey-server.service",
        "binary": "/usr/bin/valkey-server",
        "config": "/etc/valkey/valkey.conf",
        "group": "valkey",
        "pidfile": "/run/valkey/valkey-server.pid",
        "logfile": "/var/log/valkey/valkey-server.log",
        "dir": "/var/lib/valkey",
    }


def test_valkey_is_refused_where_it_is_not_packaged_or_redis_runs():
    assert server_problem("valkey", NONE, INSTALLED, "Debian 12 (bookworm)") == (
        "redis_server = 'valkey', but this host's Debian 12 (bookworm) packages no valkey-server"
    )
    assert server_problem("valkey", PACKAGED, INSTALLED, "Debian 13 (trixie)") == (
        "redis_server = 'valkey', but this host runs redis-server: moving its data to "
        "valkey-server is a migration the kit leaves to you (then remove redis-server)"
    )
    assert server_problem("keydb", NONE, NONE, "Debian 13 (trixie)") == (
        "redis_server must be one of redis, valkey, got 'keydb'"
    )
