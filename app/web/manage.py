"""The example app's management commands, run as one-offs (stdlib + Debian's psycopg2).

    python3 /app/manage.py migrate

migrate: with DATABASE_URL set, creates the table ``deploykit_migrations`` and records
the app's one migration in it (a second run changes nothing); without it, prints "no
database configured" and succeeds. APP_MIGRATE_FAIL=1 makes it fail (exit status 1),
to test what a failed release command stops.
"""

from __future__ import annotations

import os
import sys

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


COMMANDS = {"migrate": migrate}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(f"usage: manage.py {{{','.join(COMMANDS)}}}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
