"""The deploy lock and the audit log, on the first load balancer.

Every run that changes what the fleet serves (a roll, a rollback, a job roll, a
one-off) takes the lock while it is planned, before any host is touched, and gives it
back when the pyinfra process ends, however it ends (success, failure, Ctrl-C), with
an audit line saying how it went. A second run refuses at once, naming the holder.
A process killed outright (SIGKILL, a lost laptop) cannot give the lock back: the
next run is refused, and someone decides, by running deploys/unlock.py, that the
holder is gone. The lock is never broken silently.

Planning runs for every host in parallel greenlets; the callers hold the planning
lock of request.py, so one run takes one lock.
"""

from __future__ import annotations

import atexit
import datetime
import getpass
import json
import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from pyinfra import inventory, logger, state
from pyinfra.api import StringCommand

from ..commands import lock as lock_commands
from ..config import knob
from ..connections import reconnect
from ..paths import REPO_ROOT
from ..preflight import refuse


@dataclass
class HeldLock:
    lb: object
    lock_file: str
    audit_log: str
    record: dict
    # What the run says of itself before it ends (a roll's failure, say).
    outcome: dict = field(default_factory=dict)


_held: dict[int, HeldLock] = {}


def deployer() -> str:
    """Who is deploying: DEPLOYKIT_DEPLOYER (a CI job's name, say), else user@machine."""
    return os.environ.get("DEPLOYKIT_DEPLOYER") or f"{getpass.getuser()}@{socket.gethostname()}"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def repo_revision() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def is_dry_run() -> bool:
    # pyinfra keeps --dry in its CLI only; the State never learns of it.
    return "--dry" in sys.argv


def lock_host():
    """The first load balancer, connected even when --limit leaves it out."""
    lbs = inventory.get_group("lb", default=None) or []
    if not lbs:
        refuse(["no hosts in group 'lb': the deploy lock and audit log live on the first one"])
    lb = lbs[0]
    if not lb.connected:
        lb.connect(raise_exceptions=True)
    return lb


def run_on(host, command: str) -> tuple[bool, str]:
    ok, output = host.run_shell_command(StringCommand(command), _sudo=True, _timeout=30)
    return ok, "\n".join(output.stdout_lines).strip()


def describe_holder(text: str) -> str:
    try:
        record = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        return f"an unreadable lock record ({text!r})"
    return (
        f"{record.get('who', '?')} since {record.get('when', '?')}: "
        f"{record.get('action', '?')} {record.get('tag', '')} (pid {record.get('pid', '?')})"
    ).replace("  ", " ")


def take_deploy_lock(
    action: str, tag: str = "", hosts: list[str] | None = None, detail: str = ""
) -> None:
    """Hold the fleet's deploy lock for the rest of this run, or refuse naming its holder.

    In a dry run nothing is taken or written; a held lock is only reported.
    """
    if id(state) in _held:
        return
    lb = lock_host()
    lock_file = knob(lb.data, "deploy_lock_file")
    audit_log = knob(lb.data, "deploy_audit_log")
    if is_dry_run():
        _, holder = run_on(lb, lock_commands.show(lock_file))
        if holder:
            logger.warning(f"deploykit: note: the deploy lock is held by {describe_holder(holder)}")
        return
    record = {
        "token": secrets.token_hex(8),
        "who": deployer(),
        "when": now(),
        "action": action,
        "tag": tag,
        "hosts": hosts or [],
        "detail": detail,
        "pid": os.getpid(),
        "revision": repo_revision(),
    }
    ok, output = run_on(lb, lock_commands.acquire(lock_file, json.dumps(record, sort_keys=True)))
    if not ok:
        if output and not output.endswith("acquired"):
            refuse(
                [
                    f"another deploy holds the lock on {lb.name} ({lock_file}): "
                    f"{describe_holder(output)}. If that run is gone, release the lock: "
                    "pyinfra -y INVENTORY deploys/unlock.py"
                ]
            )
        refuse([f"{lb.name}: could not take the deploy lock {lock_file}: {output or 'no answer'}"])
    held = HeldLock(lb, lock_file, audit_log, record)
    _held[id(state)] = held
    _audit(held, {"event": "started"})
    atexit.register(_release_at_exit, held)
    logger.info(f"deploykit: deploy lock taken on {lb.name} for {action} {tag}".rstrip())


def report_outcome(**outcome) -> None:
    """What the audit line written at the end should say (a roll's failure, say)."""
    held = _held.get(id(state))
    if held is not None:
        held.outcome.update(outcome)


def _audit(held: HeldLock, extra: dict) -> None:
    entry = {k: v for k, v in held.record.items() if k != "token"}
    entry.update(extra)
    entry["at"] = now()
    ok, output = run_on(
        held.lb, lock_commands.audit_append(held.audit_log, json.dumps(entry, sort_keys=True))
    )
    if not ok:
        logger.warning(f"deploykit: could not append to the audit log on {held.lb.name}: {output}")


def _release_at_exit(held: HeldLock) -> None:
    failed = sorted(h.name for h in state.failed_hosts)
    # A run that never reached its main step (confirmation declined, say) did nothing.
    result = "failed" if failed else held.outcome.get("result", "not run")
    finish = {**held.outcome, "event": "finished", "result": result, "failed_hosts": failed}
    ok, output = False, ""
    # Twice: the LB may have restarted during the run, leaving a dead SSH connection.
    for attempt in range(2):
        try:
            if attempt or not held.lb.connected:
                reconnect(held.lb)
            ok, output = run_on(
                held.lb, lock_commands.release(held.lock_file, held.record["token"])
            )
        except Exception as error:  # noqa: BLE001 (the process is ending; say what to do)
            ok, output = False, f"{type(error).__name__}: {error}"
        if ok:
            _audit(held, finish)
            break
    if ok and output.endswith("released"):
        logger.info(f"deploykit: deploy lock released on {held.lb.name}")
    else:
        logger.warning(
            f"deploykit: could not release the deploy lock on {held.lb.name} ({output}); "
            "release it with deploys/unlock.py"
        )


def release_stale_lock(state, host) -> bool:  # noqa: F811 (pyinfra passes state, host)
    """The explicit unlock: print who held the lock, remove it, say so in the audit log."""
    lock_file = knob(host.data, "deploy_lock_file")
    ok, output = run_on(host, lock_commands.force_release(lock_file))
    if not ok:
        logger.error(f"deploykit: could not release {lock_file} on {host.name}: {output}")
        return False
    if output == "not-held":
        logger.info(f"deploykit: {host.name}: no deploy lock was held")
        return True
    holder = describe_holder(output)
    logger.warning(f"deploykit: released the deploy lock on {host.name}, held by {holder}")
    entry = {"event": "unlocked", "who": deployer(), "at": now(), "released": holder}
    ok, output = run_on(
        host,
        lock_commands.audit_append(
            knob(host.data, "deploy_audit_log"), json.dumps(entry, sort_keys=True)
        ),
    )
    return ok


def current_holder() -> str:
    """Who holds the lock now ('' when nobody), for plans and status."""
    lb = lock_host()
    _, holder = run_on(lb, lock_commands.show(knob(lb.data, "deploy_lock_file")))
    return describe_holder(holder) if holder else ""


def recent_audit(lines: int) -> list[str]:
    """The last `lines` entries of the audit log, oldest first."""
    lb = lock_host()
    _, audit = run_on(lb, lock_commands.audit_tail(knob(lb.data, "deploy_audit_log"), lines))
    return [line for line in audit.splitlines() if line.strip()]
