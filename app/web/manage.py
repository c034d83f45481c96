"""The example app's management commands, run as one-offs (stdlib + Debian's psycopg2).

    python3 /app/manage.py migrate
    python3 /app/manage.py record-run JOB [SECONDS]

migrate: with DATABASE_URL set, creates the table ``deploykit_migrations`` and records
the app's one migration in it (a second run changes nothing); without it, prints "no
database configured" and succeeds. APP_MIGRATE_FAIL=1 makes it fail (exit status 1),
to test what a failed release command stops.

record-run: a stand-in for a scheduled job's work. Notes the time, sleeps SECONDS (0 by
default), then inserts one row into ``deploykit_job_runs`` (job, started_at,
finished_at, app_version): a run cut short records nothing. Needs DATABASE_URL.
"""

from __future__ import annotations

import os
import sys
import time

MIGRATIONS = ["0001_initial"]


def migrate() -> int:
    version = os.environ.get("APP_VERSION", "dev")
    print(f"migrate: app {version}")
    if os.environ.get("APP_MIGRATE_FAIL", "").strip() == "1":
        print("migrate: failing on purpose (APP_MIGRATE_FAIL=1)", file=sys.stderr)
        return 1
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        print("migrate: no database configured")
        return 0
    import psycopg2  # only with a database: the image has Debian's python3-psycopg2

    try:
        connection = psycopg2.connect(url, connect_timeout=10)
    except psycopg2.OperationalError as error:
        # The message names the server, never the password.
        print(f"migrate: cannot reach the database: {str(error).strip()}", file=sys.stderr)
        return 1
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS deploykit_migrations "
            "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for name in MIGRATIONS:
            cursor.execute(
                "INSERT INTO deploykit_migrations (name) VALUES (%s) ON CONFLICT DO NOTHING",
                (name,),
            )
            print(f"migrate: {name} {'applied' if cursor.rowcount else 'already applied'}")
    return 0


def record_run(job: str, seconds: str = "0") -> int:
    version = os.environ.get("APP_VERSION", "dev")
    try:
        duration = float(seconds)
    except ValueError:
        print(f"record-run: SECONDS must be a number, got {seconds!r}", file=sys.stderr)
        return 2
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        print("record-run: DATABASE_URL is not set", file=sys.stderr)
        return 1
    import psycopg2

    started = time.time()
    print(f"record-run: {job} started (app {version})", flush=True)
    time.sleep(duration)
    connection = psycopg2.connect(url, connect_timeout=10)
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS deploykit_job_runs (id bigserial PRIMARY KEY, "
            "job text NOT NULL, started_at timestamptz NOT NULL, "
            "finished_at timestamptz NOT NULL DEFAULT now(), app_version text NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO deploykit_job_runs (job, started_at, app_version) "
            "VALUES (%s, to_timestamp(%s), %s)",
            (job, started, version),
        )
    print(f"record-run: {job} recorded (app {version})")
    return 0


# name: (function, how many arguments it takes at least, at most)
COMMANDS = {"migrate": (migrate, 0, 0), "record-run": (record_run, 1, 2)}


def main(argv: list[str]) -> int:
    command = COMMANDS.get(argv[0]) if argv else None
    if command is None or not command[1] <= len(argv) - 1 <= command[2]:
        print("usage: manage.py migrate | record-run JOB [SECONDS]", file=sys.stderr)
        return 2
    return command[0](*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
