"""The app's PostgreSQL role and database, without its password on any command line."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import StringCommand, operation

from ..commands.postgres import database_statements, psql_as_postgres, role_statements
from ..facts import PostgresRoleState, get_secret_fact
from .config_file import private_upload

# Where the SQL waits for psql, for the length of one command: root's own 0600 file on
# a tmpfs, deleted by the command that reads it.
SQL_FILE = "/run/deploykit-postgres-role.sql"


@operation()
def role_and_database(role: str, database: str, password: str):
    """
    Make `role` a login role with `password` and `database` a database it owns.

    pyinfra's own postgres operations pass the password inside ``psql -c`` (visible in
    ``ps``) and change it on every run; this one sends a SCRAM verifier through a
    private file and changes nothing when the stored verifier matches the password.

    + role: the app's role (a plain lower-case identifier)
    + database: the app's database (a plain lower-case identifier)
    + password: the role's password; it never leaves this machine, only its verifier

    **Example:**

    .. code:: python

        role_and_database(
            name="Ensure the app's role and database exist",
            role="app",
            database="app",
            password=secrets["DB_PASSWORD"],
        )
    """
    # Its output is the role's SCRAM verifier: never printed, even at -vvv.
    current = get_secret_fact(host, PostgresRoleState, role=role, database=database)
    current = current or PostgresRoleState.default()
    statements = role_statements(role, current["role"], password)
    statements += database_statements(database, role, current["database_owner"])
    if not statements:
        host.noop(f"role {role} (password current) and database {database} exist")
        return
    yield StringCommand("install", "-m", "600", "-o", "root", "-g", "root", "/dev/null", SQL_FILE)
    # An upload with sudo copies onto the existing file, which keeps its 0600 mode.
    yield from private_upload("\n".join(statements) + "\n", SQL_FILE)
    yield StringCommand(psql_as_postgres(SQL_FILE))
