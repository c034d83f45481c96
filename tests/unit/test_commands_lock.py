"""The deploy lock's command lines: exact strings, then run for real by sh on a tmp dir."""

from __future__ import annotations

import fcntl
import os
import shlex
import subprocess
from contextlib import contextmanager

import pytest

from deploykit.commands import lock

RECORD = '{"token": "t0k3n", "who": "ann@laptop"}'


def sh(command: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=cwd)


def test_acquire_is_an_exclusive_create_that_prints_the_holder_when_held():
    assert lock.acquire("/var/lib/deploykit/deploy.lock", RECORD) == (
        "mkdir -p /var/lib/deploykit && chmod 0750 /var/lib/deploykit && "
        "flock --wait 30 /var/lib/deploykit sh -c "
        + shlex.quote(
            'if ( set -C; printf \'%s\\n\' \'{"token": "t0k3n", "who": "ann@laptop"}\''
            " > /var/lib/deploykit/deploy.lock ) 2>/dev/null; "
            "then echo acquired; else cat /var/lib/deploykit/deploy.lock; exit 4; fi"
        )
    )


def test_release_compares_the_token_and_removes_under_the_folders_flock():
    assert lock.release("/var/lib/deploykit/deploy.lock", "t0k3n") == (
        "if [ -d /var/lib/deploykit ]; then flock --wait 30 /var/lib/deploykit sh -c "
        + shlex.quote(
            'if grep -qF -- \'"token": "t0k3n"\' /var/lib/deploykit/deploy.lock 2>/dev/null;'
            " then rm -f /var/lib/deploykit/deploy.lock && echo released;"
            " else echo not-held; fi"
        )
        + "; else echo not-held; fi"
    )


@contextmanager
def folder_flock(folder):
    """Hold flock on `folder`, as another lock command in progress on the host would."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "command",
    [
        lambda path: lock.release(path, "t0k3n", wait_s=1),
        lambda path: lock.force_release(path, wait_s=1),
        lambda path: lock.acquire(path, '{"token": "other"}', wait_s=1),
    ],
    ids=["release", "force_release", "acquire"],
)
def test_no_lock_command_touches_the_lock_while_another_one_is_in_progress(tmp_path, command):
    # A release checks the token, then removes: with an unlock and another deploy's
    # take between the two, it would remove the new holder's lock. Each command holds
    # the folder's flock for its whole check-and-change, and waits for the others'.
    path = str(tmp_path / "deploy.lock")
    sh(lock.acquire(path, RECORD))
    with folder_flock(str(tmp_path)):
        blocked = sh(command(path))
    assert blocked.returncode == 1 and blocked.stdout == ""
    assert (tmp_path / "deploy.lock").read_text() == RECORD + "\n"
    assert sh(command(path)).returncode in (0, lock.HELD)


def test_release_of_a_lock_never_taken_or_without_its_folder_is_a_no_op(tmp_path):
    assert sh(lock.release(str(tmp_path / "none" / "deploy.lock"), "t0k3n")).stdout == (
        "not-held\n"
    )
    assert sh(lock.force_release(str(tmp_path / "none" / "deploy.lock"))).stdout == ("not-held\n")


def test_release_needs_the_whole_token_field_not_a_part_of_it(tmp_path):
    path = str(tmp_path / "deploy.lock")
    sh(lock.acquire(path, '{"token": "t0k3n-longer", "who": "bob@ci"}'))
    assert sh(lock.release(path, "t0k3n")).stdout == "not-held\n"
    assert (tmp_path / "deploy.lock").exists()


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
