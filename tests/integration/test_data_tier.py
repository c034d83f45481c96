"""PostgreSQL on db1: reachable over TLS from the app's hosts only, provisioned
idempotently without its password leaving the deploy machine, dumped and restored."""

from __future__ import annotations

import json
import uuid

import pytest

from deploykit.components.postgres import BACKUP_UNIT, DEFAULTS
from deploykit.secrets import load_secrets

from .sandbox_world import REPO_ROOT, pyinfra

# Also on Debian 12 hosts (the data tier): make test's second phase.
pytestmark = pytest.mark.every_release

SECRETS_FILE = ".sandbox/secrets.env"
DUMPS = "/var/backups/postgresql"
ROLE_OPERATION = "PostgreSQL | Ensure the app's role and database exist, with the current password"
PROVISION_DB = ("inventories/sandbox.py", "deploys/provision.py", "--limit", "db1")


@pytest.fixture(scope="module")
def password():
    return load_secrets(SECRETS_FILE)["DB_PASSWORD"]


@pytest.fixture(scope="module")
def db(fleet, password):
    """db1 provisioned by this branch's code (a no-op right after the session's runs)."""
    run = pyinfra(*PROVISION_DB)
    assert run.returncode == 0, run.failure_excerpt()
    assert password not in run.output
    return fleet


def sql_as_postgres(world, sql: str, database: str = "app") -> tuple[int, str]:
    """psql as the postgres superuser on db1 itself (peer authentication)."""
    return world.sh("db1", f'cd / && runuser -u postgres -- psql -X -A -t -d {database} -c "{sql}"')


def dump_names(world) -> list[str]:
    code, output = world.sh("db1", f"ls -1 {DUMPS}")
    assert code == 0, output
    return sorted(output.split())


def test_postgres_listens_on_the_private_address_and_localhost_only(db):
    _, output = db.sh("db1", f"systemctl is-active {db.postgres_service()}")
    assert output.strip() == "active"
    _, output = db.sh("db1", "ss -H -l -t -n 'sport = :5432' | awk '{ print $4 }'")
    assert sorted(output.split()) == sorted([f"{db.ip('db1')}:5432", "127.0.0.1:5432"])
    assert sql_as_postgres(db, "SHOW ssl")[1].strip() == "on"


def test_app_hosts_connect_over_tls_only(db, password):
    for source in ("web1", "job1"):
        code, output = db.psql(
            source, "db1", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", password
        )
        assert (code, output.strip()) == (0, "t"), (source, output)
    code, output = db.psql("web1", "db1", "SELECT 1", password, sslmode="disable")
    assert code != 0
    assert 'pg_hba.conf rejects connection for host "{}"'.format(db.ip("web1")) in output
    assert "no encryption" in output
    code, output = db.psql("web1", "db1", "SELECT 1", "not-the-password")
    assert code != 0 and 'password authentication failed for user "app"' in output


def app_db_endpoint(world, source: str, database_url: str) -> tuple[int, dict]:
    """GET /db of the example app (this checkout's app/web/webapp.py), run with
    psycopg2 inside host `source`'s network namespace; DATABASE_URL from a 0600 file."""
    script = (
        "import json, webapp\n"
        "url = open('/run/database-url').read().strip()\n"
        "environ = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/db', 'QUERY_STRING': ''}\n"
        "status = []\n"
        "body = b''.join(webapp.make_app({'DATABASE_URL': url})(environ, "
        "lambda s, h: status.append(s)))\n"
        "print(json.dumps([int(status[0].split()[0]), json.loads(body)]))\n"
    )
    code, output = world.run_pg_client(
        source,
        ["python3", "-c", script],
        private_files={"/run/database-url": database_url},
        environment={"PYTHONPATH": "/app"},
        mounts={"/app/webapp.py": str(REPO_ROOT / "app" / "web" / "webapp.py")},
    )
    assert code == 0, output
    status, body = json.loads(output.strip().splitlines()[-1])
    return status, body


def test_app_db_endpoint_reports_tls_from_a_web_host(db, password):
    url = f"postgres://app:{password}@{db.ip('db1')}:5432/app?sslmode=require"
    status, body = app_db_endpoint(db, "web1", url)
    assert status == 200, body
    assert body["ssl"] is True and body["ssl_version"].startswith("TLSv1.")
    assert body["server_version"].startswith(f"PostgreSQL {db.postgres_major()}.")
    status, body = app_db_endpoint(db, "web1", url.replace("require", "disable"))
    assert status == 503 and "pg_hba.conf rejects connection" in body["error"]
    assert password not in json.dumps(body)


def test_load_balancer_cannot_reach_postgres(db, password):
    assert db.can_connect("web1", "db1", 5432), "postgres must listen, or this proves nothing"
    assert not db.can_connect("lb1", "db1", 5432)
    code, output = db.psql("lb1", "db1", "SELECT 1", password)
    assert code != 0 and "timeout expired" in output


def postgres_rows(run) -> dict[str, list[str]]:
    """The PostgreSQL component's rows of pyinfra's results table: name -> counts
    (hosts, success, error, no change)."""
    rows = {}
    for line in run.output.splitlines():
        if line.strip().startswith("PostgreSQL |"):
            fields = line.split()
            rows[" ".join(fields[:-4])] = fields[-4:]
    assert len(rows) >= 10, run.output[-4000:]
    return rows


def test_second_provision_changes_nothing_and_never_prints_the_password(db, password):
    run = pyinfra(*PROVISION_DB)
    assert run.returncode == 0, run.failure_excerpt()
    # Only the PostgreSQL rows: other helpers' components may share db1 in development.
    changed = {name: row for name, row in postgres_rows(run).items() if row != ["1", "-", "-", "1"]}
    assert changed == {}, run.output[-4000:]
    assert password not in run.output


def test_a_pg_hba_change_is_a_reload_not_a_restart(db, password):
    started = sql_as_postgres(db, "SELECT pg_postmaster_start_time()")[1].strip()
    try:
        run = pyinfra(*PROVISION_DB, "--data", 'postgres_client_groups=["web"]')
        assert run.returncode == 0, run.failure_excerpt()
        code, output = db.psql("job1", "db1", "SELECT 1", password)
        assert (
            code != 0
            and 'pg_hba.conf rejects connection for host "{}"'.format(db.ip("job1")) in output
        )
        assert db.psql("web1", "db1", "SELECT 1", password)[0] == 0
    finally:
        run = pyinfra(*PROVISION_DB)
        assert run.returncode == 0, run.failure_excerpt()
    assert db.psql("job1", "db1", "SELECT 1", password)[0] == 0
    assert sql_as_postgres(db, "SELECT pg_postmaster_start_time()")[1].strip() == started


def test_the_password_is_nowhere_on_the_db_host(db, password):
    # Only a SCRAM verifier reaches the host: no file, log or journal holds the password.
    # sudo logs every command pyinfra runs to the journal, so a password on a command
    # line (visible in ps) would show up there.
    _, output = db.sh(
        "db1",
        f"grep -r -l -F -e '{password}' /etc /run /tmp /var/log /var/lib/postgresql /root /home"
        f"; journalctl --no-pager | grep -c -F -e '{password}'",
    )
    assert output.split() == ["0"], output
    _, output = sql_as_postgres(db, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    assert output.startswith("SCRAM-SHA-256$4096:"), output
    _, output = db.sh(
        "db1",
        f"stat -c '%a %U' /etc/postgresql/{db.postgres_major()}/main/tls/server.key; "
        "test -e /run/deploykit-postgres-role.sql && echo leftover",
    )
    assert output.split() == ["600", "postgres"], output


def test_a_changed_password_is_applied_and_only_then(db, password, tmp_path):
    # The sandbox's secrets with DB_PASSWORD rotated; the other secrets stay as they are.
    rotated = tmp_path / "rotated.env"
    rotated.write_text(
        "".join(
            f"{name}={value}-rotated\n" if name == "DB_PASSWORD" else f"{name}={value}\n"
            for name, value in db.secrets().items()
        )
    )
    try:
        run = pyinfra(*PROVISION_DB, "--data", f"app_secrets_file={rotated}")
        assert run.returncode == 0, run.failure_excerpt()
        changed = [name for name, row in postgres_rows(run).items() if row[1] == "1"]
        assert changed == [ROLE_OPERATION], run.output[-4000:]
        assert f"{password}-rotated" not in run.output
        assert db.psql("web1", "db1", "SELECT 1", f"{password}-rotated")[0] == 0
        assert db.psql("web1", "db1", "SELECT 1", password)[0] != 0
    finally:
        run = pyinfra(*PROVISION_DB)
        assert run.returncode == 0, run.failure_excerpt()
    assert db.psql("web1", "db1", "SELECT 1", password)[0] == 0


def test_backup_now_then_restore_into_a_scratch_database(db, password):
    marker = uuid.uuid4().hex
    code, output = db.psql(
        "web1",
        "db1",
        "CREATE TABLE IF NOT EXISTS backup_probe (marker text);"
        f"INSERT INTO backup_probe VALUES ('{marker}')",
        password,
    )
    assert code == 0, output
    before = set(dump_names(db))
    run = pyinfra("inventories/sandbox.py", "deploys/backup.py", "--limit", "db1")
    assert run.returncode == 0, run.failure_excerpt()
    new = sorted(set(dump_names(db)) - before)
    assert len(new) == 1 and new[0].startswith("app-") and new[0].endswith(".dump"), new
    dump = f"{DUMPS}/{new[0]}"
    code, output = db.sh("db1", f"stat -c '%a %U %G' {dump}")
    assert output.strip() == "600 postgres postgres"

    scratch = f"restore_check_{marker[:8]}"
    try:
        code, output = db.sh("db1", f"deploykit-pg-restore {dump} {scratch}")
        assert code == 0, output
        code, output = sql_as_postgres(
            db, f"SELECT marker FROM backup_probe WHERE marker = '{marker}'", database=scratch
        )
        assert output.strip() == marker
        code, output = sql_as_postgres(
            db, f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{scratch}'"
        )
        assert output.strip() == "app"
        # Never into an existing database.
        code, output = db.sh("db1", f"deploykit-pg-restore {dump} {scratch}")
        assert code == 1 and "already exists" in output
    finally:
        sql_as_postgres(db, f"DROP DATABASE IF EXISTS {scratch}", database="postgres")


def test_backups_keep_the_newest_n_dumps(db):
    keep = DEFAULTS["postgres_backup_keep"]
    # N + 2 dumps from earlier nights, and nothing else.
    stale = [f"app-200001{day:02d}T030000Z.dump" for day in range(1, keep + 3)]
    paths = " ".join(f"{DUMPS}/{name}" for name in stale)
    code, output = db.sh("db1", f"rm -f {DUMPS}/*.dump && runuser -u postgres -- touch {paths}")
    assert code == 0, output
    assert dump_names(db) == stale
    code, output = db.sh("db1", f"systemctl start {BACKUP_UNIT}.service")
    assert code == 0, output
    after = dump_names(db)
    # The new dump and the newest N - 1 of the old ones; the 3 oldest are gone.
    assert len(after) == keep, after
    assert after[:-1] == stale[3:]
    assert after[-1] not in stale and after[-1].startswith("app-")


def test_backup_timer_is_scheduled(db):
    _, output = db.sh(
        "db1", f"systemctl is-enabled {BACKUP_UNIT}.timer; systemctl is-active {BACKUP_UNIT}.timer"
    )
    assert output.split() == ["enabled", "active"]
    _, output = db.sh("db1", f"systemctl show -P NextElapseUSecRealtime {BACKUP_UNIT}.timer")
    assert output.strip(), "the timer has no next run"
