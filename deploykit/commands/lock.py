"""Deploy lock and audit log command lines, run on the first load balancer. Pure.

The lock is a file created with the shell's noclobber (`set -C`), which opens it with
O_EXCL: of two deploys racing for it, exactly one creates it. Its one line is the
holder's JSON record, shown to whoever is refused.
"""

from __future__ import annotations

import shlex

# Exit status of `acquire` when someone else holds the lock (its record is printed).
HELD = 4


def acquire(lock_file: str, record: str) -> str:
    lock, folder = shlex.quote(lock_file), shlex.quote(_folder(lock_file))
    return (
        f"mkdir -p {folder} && chmod 0750 {folder} && "
        f"if ( set -C; printf '%s\\n' {shlex.quote(record)} > {lock} ) 2>/dev/null; "
        f"then echo acquired; else cat {lock}; exit {HELD}; fi"
    )


def release(lock_file: str, token: str) -> str:
    """Remove the lock only if it is still ours: a lock released by hand, then taken by
    another deploy, is not released from under it."""
    lock = shlex.quote(lock_file)
    return (
        f"if grep -qF {shlex.quote(token)} {lock} 2>/dev/null; "
        f"then rm -f {lock} && echo released; else echo not-held; fi"
    )


def force_release(lock_file: str) -> str:
    """Print the record of whoever held the lock, then remove it (the explicit unlock)."""
    lock = shlex.quote(lock_file)
    return f"if [ -e {lock} ]; then cat {lock}; rm -f {lock}; else echo not-held; fi"


def show(lock_file: str) -> str:
    lock = shlex.quote(lock_file)
    return f"cat {lock} 2>/dev/null || true"


def audit_append(audit_log: str, record: str) -> str:
    log, folder = shlex.quote(audit_log), shlex.quote(_folder(audit_log))
    return (
        f"mkdir -p {folder} && touch {log} && chmod 0640 {log} && "
        f"printf '%s\\n' {shlex.quote(record)} >> {log}"
    )


def audit_tail(audit_log: str, lines: int) -> str:
    return f"tail -n {int(lines)} {shlex.quote(audit_log)} 2>/dev/null || true"


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"
