"""Pure builders for PostgreSQL: SCRAM verifiers, the SQL that makes the app's role and
database, and the psql command lines that run it. No pyinfra state, no I/O.

The role's password never reaches the database host: PostgreSQL accepts a SCRAM-SHA-256
verifier in place of a password (``ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'``) and
stores it as is. The verifier is computed here, on the machine running pyinfra, and an
existing one is checked by recomputing it with its own salt, so a second run can tell
"same password" without ever sending the password anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import shlex

# PostgreSQL's defaults (src/include/common/scram-common.h).
SCRAM_ITERATIONS = 4096
SCRAM_SALT_BYTES = 16

# Role and database names the component accepts: plain lower-case identifiers, which
# PostgreSQL never folds or needs quoted, so no quoting mistake can change their meaning.
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")


def is_identifier(name: str) -> bool:
    return bool(IDENTIFIER.match(name))


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores in pg_authid.rolpassword.

    PostgreSQL runs the password through SASLprep first; for printable ASCII that
    changes nothing, and the component refuses any other password.
    """
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def new_scram_verifier(password: str) -> str:
    return scram_verifier(password, os.urandom(SCRAM_SALT_BYTES))


def verifier_matches(verifier: str | None, password: str) -> bool:
    """Whether a stored verifier was made from `password` (recomputed with its salt)."""
    match = re.match(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$", verifier or "")
    if not match:
        return False
    iterations, salt = int(match.group(1)), base64.b64decode(match.group(2))
    return hmac.compare_digest(scram_verifier(password, salt, iterations), verifier or "")


def sql_literal(text: str) -> str:
    """A standard-conforming SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def role_statements(role: str, existing: dict | None, password: str) -> list[str]:
    """What makes `role` a login role with `password`; [] when it already is one.

    + existing: {"can_login": bool, "verifier": str} as read from pg_authid, or None
    """
    if existing and existing["can_login"] and verifier_matches(existing["verifier"], password):
        return []
    verb = "ALTER" if existing else "CREATE"
    return [f"{verb} ROLE {role} LOGIN PASSWORD {sql_literal(new_scram_verifier(password))};"]


def database_statements(database: str, owner: str, current_owner: str | None) -> list[str]:
    """What makes `database` exist, owned by `owner`; [] when it already does."""
    if current_owner is None:
        return [f"CREATE DATABASE {database} OWNER {owner};"]
    if current_owner != owner:
        return [f"ALTER DATABASE {database} OWNER TO {owner};"]
    return []


def psql_as_postgres(sql_file: str) -> str:
    """Run the SQL in `sql_file` as the postgres superuser (peer authentication), then
    delete the file whatever happened. The shell, as root, opens the file, so it can stay
    root's own 0600 file; the SQL never appears on a command line."""
    quoted = shlex.quote(sql_file)
    return (
        f"cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres < {quoted}; "
        f"status=$?; rm -f {quoted}; exit $status"
    )


def role_state_query(role: str, database: str) -> str:
    """One row per thing that exists: `role|can_login|verifier` and `database|owner|`."""
    return (
        "SELECT 'role', rolcanlogin::text, coalesce(rolpassword, '') FROM pg_authid "
        f"WHERE rolname = {sql_literal(role)} "
        "UNION ALL SELECT 'database', pg_get_userbyid(datdba)::text, '' FROM pg_database "
        f"WHERE datname = {sql_literal(database)}"
    )


def psql_query_as_postgres(query: str) -> str:
    """Unaligned, tuples-only output with `|` between fields; nothing when the server is
    not installed or not running (first provision: it is planned before it exists)."""
    return (
        "cd / && command -v psql >/dev/null 2>&1 && "
        f"runuser -u postgres -- psql -X -A -t -q -F '|' -d postgres -c {shlex.quote(query)} "
        "2>/dev/null || true"
    )


def parse_role_state(lines: list[str]) -> dict:
    """Output of role_state_query -> {"role": {...} or None, "database_owner": str or None}."""
    state: dict = {"role": None, "database_owner": None}
    for line in lines:
        kind, _, rest = line.strip().partition("|")
        first, _, second = rest.partition("|")
        if kind == "role":
            state["role"] = {"can_login": first == "true", "verifier": second}
        elif kind == "database":
            state["database_owner"] = first
    return state
