"""PostgreSQL builders by exact string, and the role operation against a fake host."""

from __future__ import annotations

import base64

import pytest

from deploykit.commands.postgres import (
    database_statements,
    parse_role_state,
    psql_as_postgres,
    psql_query_as_postgres,
    role_state_query,
    role_statements,
    scram_verifier,
    verifier_matches,
)
from deploykit.components.postgres import DEFAULTS, settings_problems
from deploykit.operations.postgres import SQL_FILE, role_and_database

from .fakes import FakeData, FakeHost, command_texts, run_operation

# What PostgreSQL 15 stored for CREATE ROLE ... PASSWORD 'pencil' (read from pg_authid).
PENCIL = (
    "SCRAM-SHA-256$4096:jVH1rj29Kl+K3N02B1t4aw==$J/wGbF7gvK0g2uZzlvudrZOk0U5YdgaxWxUjMOEaovg="
    ":sopF5V5ntBZgavg2B5Rt2YYy0BKGwQp38eZya7sco8w="
)


def test_scram_verifier_is_what_postgresql_stores():
    assert scram_verifier("pencil", base64.b64decode("jVH1rj29Kl+K3N02B1t4aw==")) == PENCIL


@pytest.mark.parametrize(
    "verifier, password, matches",
    [
        (PENCIL, "pencil", True),
        (PENCIL, "pencil2", False),
        ("md5a3556571e93b0d20722ba62be61e8c2d", "pencil", False),
        ("", "pencil", False),
        (None, "pencil", False),
    ],
)
def test_verifier_matches_only_its_own_password(verifier, password, matches):
    assert verifier_matches(verifier, password) is matches


def test_role_statements_create_a_missing_role_with_a_verifier_not_the_password():
    [statement] = role_statements("app", None, "pencil")
    prefix = "CREATE ROLE app LOGIN PASSWORD 'SCRAM-SHA-256$4096:"
    assert statement.startswith(prefix) and statement.endswith("';")
    assert "pencil" not in statement
    assert verifier_matches(statement[len("CREATE ROLE app LOGIN PASSWORD '") : -2], "pencil")


def test_role_statements_alter_a_role_with_another_password_or_no_login():
    for existing in (
        {"can_login": True, "verifier": PENCIL},
        {"can_login": False, "verifier": scram_verifier("secret", b"0123456789abcdef")},
    ):
        [statement] = role_statements("app", existing, "secret")
        assert statement.startswith("ALTER ROLE app LOGIN PASSWORD 'SCRAM-SHA-256$4096:")


def test_role_statements_leave_a_current_role_alone():
    assert role_statements("app", {"can_login": True, "verifier": PENCIL}, "pencil") == []


def test_database_statements():
    assert database_statements("app", "app", None) == ["CREATE DATABASE app OWNER app;"]
    assert database_statements("app", "app", "postgres") == ["ALTER DATABASE app OWNER TO app;"]
    assert database_statements("app", "app", "app") == []


def test_psql_as_postgres_reads_the_sql_from_a_file_and_deletes_it():
    assert psql_as_postgres("/run/x.sql") == (
        "cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres < /run/x.sql; "
        "status=$?; rm -f /run/x.sql; exit $status"
    )


def test_role_state_query_and_its_command():
    query = role_state_query("app", "app")
    assert query == (
        "SELECT 'role', rolcanlogin::text, coalesce(rolpassword, '') FROM pg_authid "
        "WHERE rolname = 'app' "
        "UNION ALL SELECT 'database', pg_get_userbyid(datdba)::text, '' FROM pg_database "
        "WHERE datname = 'app'"
    )
    assert psql_query_as_postgres("SELECT 'x'") == (
        "cd / && command -v psql >/dev/null 2>&1 && "
        "runuser -u postgres -- psql -X -A -t -q -F '|' -d postgres -c 'SELECT '\"'\"'x'\"'\"''"
        " 2>/dev/null || true"
    )


def test_parse_role_state():
    assert parse_role_state([f"role|true|{PENCIL}", "database|app|"]) == {
        "role": {"can_login": True, "verifier": PENCIL},
        "database_owner": "app",
    }
    assert parse_role_state([]) == {"role": None, "database_owner": None}


def _role_host(state):
    return FakeHost(name="db1", facts={"PostgresRoleState": {"*": state}})


def test_operation_creates_role_and_database_through_a_private_file():
    host = _role_host({"role": None, "database_owner": None})
    commands = run_operation(role_and_database, host, role="app", database="app", password="pw")
    texts = command_texts(commands)
    assert texts[:2] == [
        f"install -m 600 -o root -g root /dev/null {SQL_FILE}",
        "install -d -m 0700 -o root /var/lib/deploykit-upload",
    ]
    # Uploaded through the SSH user's private folder, never /tmp.
    assert texts[2].startswith(f"upload {SQL_FILE} via /var/lib/deploykit-upload/")
    assert texts[3:] == [psql_as_postgres(SQL_FILE)]
    sql = commands[2].src.getvalue()
    assert sql.startswith("CREATE ROLE app LOGIN PASSWORD 'SCRAM-SHA-256$4096:")
    assert sql.endswith("';\nCREATE DATABASE app OWNER app;\n")
    assert "'pw'" not in sql


def test_operation_is_a_noop_when_role_and_database_are_current():
    host = _role_host({"role": {"can_login": True, "verifier": PENCIL}, "database_owner": "app"})
    commands = run_operation(role_and_database, host, role="app", database="app", password="pencil")
    assert commands == []
    assert host.noop_reason == "role app (password current) and database app exist"


def _settings(**overrides):
    return FakeData(
        {
            **DEFAULTS,
            "private_ip": "10.0.0.41",
            "app_secrets_file": "secrets/staging.env",
            "postgres_tls_certificate": "README.md",
            "postgres_tls_key": "README.md",
            **overrides,
        }
    )


def test_settings_problems_none_for_good_settings():
    clients = [{"name": "web1", "address": "10.0.0.21"}]
    assert settings_problems("db1", _settings(), clients, {"DB_PASSWORD": "pw"}) == []


def test_settings_problems_name_each_culprit():
    data = _settings(
        postgres_user="App-User",
        postgres_tls_key="",
        postgres_tls_certificate="files/tls/missing.crt",
        postgres_backup_dir="/var/backups/$(reboot)",
        postgres_backup_keep=0,
    )
    clients = [{"name": "web1", "address": None}]
    assert settings_problems("db1", data, clients, {"DB_PASSWORD": "pässword"}) == [
        "postgres_user 'App-User' must be a lower-case identifier",
        "postgres_tls_certificate: files/tls/missing.crt does not exist",
        "postgres_tls_key is empty: clients are admitted over TLS only",
        "postgres_backup_dir '/var/backups/$(reboot)' is not a plain path",
        "postgres_backup_keep must be at least 1, got 0",
        "host web1: private_ip None is not an IPv4 address",
        "DB_PASSWORD must be printable ASCII (SCRAM's SASLprep is not applied)",
    ]
    assert settings_problems("db1", _settings(), [], {}) == [
        "DB_PASSWORD is missing from secrets/staging.env"
    ]
