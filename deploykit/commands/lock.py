"""Deploy lock and audit log command lines, run on the first load balancer. Pure.

The lock is a file created with the shell's noclobber (`set -C`), which opens it with
O_EXCL: of two deploys racing for it, exactly one creates it. Its one line is the
holder's JSON record, shown to whoever is refused.

Every command that reads or changes the lock file does so under `flock` on the lock's
folder, so a release's "is it still ours? then remove it" is one step: an unlock and a
new deploy's take cannot slip in between the check and the removal.
"""

from __future__ import annotations

import shlex

# Exit status of `acquire` when someone else holds the lock (its record is printed).
HELD = 4
# Longest wait for another lock command on the same host to finish.
MUTEX_WAIT_S = 30


def acquire(lock_file: str, record: str, wait_s: int = MUTEX_WAIT_S) -> str:
    lock, folder = shlex.quote(lock_file), shlex.quote(_folder(lock_file))
    take = (
        f"if ( set -C; printf '%s\\n' {shlex.quote(record)} > {lock} ) 2>/dev/null; "
        f"then echo acquired; else cat {lock}; exit {HELD}; fi"
    )
    return f"mkdir -p {folder} && chmod 0750 {folder} && {_exclusive(folder, take, wait_s)}"


def release(lock_file: str, token: str, wait_s: int = MUTEX_WAIT_S) -> str:
    """Remove the lock only if it is still ours (its record carries our token): a lock
    released by hand, then taken by another deploy, is not released from under it."""
    lock, folder = shlex.quote(lock_file), _folder(lock_file)
    ours = shlex.quote(f'"token": "{token}"')
    check_and_remove = (
        f"if grep -qF -- {ours} {lock} 2>/dev/null; "
        f"then rm -f {lock} && echo released; else echo not-held; fi"
    )
    return _if_folder(folder, _exclusive(shlex.quote(folder), check_and_remove, wait_s))


def force_release(lock_file: str, wait_s: int = MUTEX_WAIT_S) -> str:
    """Print the record of whoever held the lock, then remove it (the explicit unlock)."""
    lock, folder = shlex.quote(lock_file), _folder(lock_file)
    show_and_remove = f"if [ -e {lock} ]; then cat {lock}; rm -f {lock}; else echo not-held; fi"
    return _if_folder(folder, _exclusive(shlex.quote(folder), show_and_remove, wait_s))


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


def _exclusive(folder: str, script: str, wait_s: int) -> str:
    """`script` run by sh while holding flock on `folder` (quoted), waiting `wait_s`."""
    return f"flock --wait {int(wait_s)} {folder} sh -c {shlex.quote(script)}"


def _if_folder(folder: str, command: str) -> str:
    """No folder, no lock: flock would fail to open it."""
    return f"if [ -d {shlex.quote(folder)} ]; then {command}; else echo not-held; fi"


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"
