"""The deploy lock's command lines: exact strings, then run for real by sh on a tmp dir."""

from __future__ import annotations

import subprocess

from deploykit.commands import lock

RECORD = '{"who": "ann@laptop", "token": "t0k3n"}'


def sh(command: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=cwd)


def test_acquire_is_an_exclusive_create_that_prints_the_holder_when_held():
    assert lock.acquire("/var/lib/deploykit/deploy.lock", RECORD) == (
        "mkdir -p /var/lib/deploykit && chmod 0750 /var/lib/deploykit && "
        'if ( set -C; printf \'%s\\n\' \'{"who": "ann@laptop", "token": "t0k3n"}\''
        " > /var/lib/deploykit/deploy.lock ) 2>/dev/null; "
        "then echo acquired; else cat /var/lib/deploykit/deploy.lock; exit 4; fi"
    )


def test_second_acquire_is_refused_with_the_first_holders_record(tmp_path):
    path = str(tmp_path / "locks" / "deploy.lock")
    first = sh(lock.acquire(path, RECORD))
    second = sh(lock.acquire(path, '{"who": "bob@ci", "token": "other"}'))
    assert (first.returncode, first.stdout) == (0, "acquired\n")
    assert (second.returncode, second.stdout) == (lock.HELD, RECORD + "\n")
    assert oct((tmp_path / "locks").stat().st_mode & 0o777) == "0o750"


def test_release_removes_only_our_own_lock(tmp_path):
    path = str(tmp_path / "deploy.lock")
    sh(lock.acquire(path, RECORD))
    assert sh(lock.release(path, "someone-else")).stdout == "not-held\n"
    assert (tmp_path / "deploy.lock").exists()
    assert sh(lock.release(path, "t0k3n")).stdout == "released\n"
    assert not (tmp_path / "deploy.lock").exists()
    assert sh(lock.release(path, "t0k3n")).stdout == "not-held\n"


def test_force_release_prints_the_holder_then_frees_the_lock(tmp_path):
    path = str(tmp_path / "deploy.lock")
    sh(lock.acquire(path, RECORD))
    assert sh(lock.force_release(path)).stdout == RECORD + "\n"
    assert sh(lock.acquire(path, RECORD)).stdout == "acquired\n"
    sh(lock.force_release(path))
    assert sh(lock.force_release(path)).stdout == "not-held\n"


def test_audit_lines_are_appended_privately_and_a_quote_cannot_escape(tmp_path):
    log = str(tmp_path / "log" / "audit.log")
    hostile = '{"who": "x\'; touch pwned; \'"}'
    assert sh(lock.audit_append(log, RECORD)).returncode == 0
    assert sh(lock.audit_append(log, hostile), cwd=tmp_path).returncode == 0
    assert (tmp_path / "log" / "audit.log").read_text() == RECORD + "\n" + hostile + "\n"
    assert oct((tmp_path / "log" / "audit.log").stat().st_mode & 0o777) == "0o640"
    assert not (tmp_path / "pwned").exists()
    assert sh(lock.audit_tail(log, 1)).stdout == hostile + "\n"
    assert sh(lock.audit_tail(str(tmp_path / "none.log"), 5)).stdout == ""
