"""The deploy lock and the audit log, on the first load balancer.

Every run that changes what the fleet serves (a roll, a rollback, a job roll, a
one-off) takes the lock while it is planned, before any host is touched, and gives it
back when the pyinfra process ends, however it ends (success, failure, Ctrl-C), with
an audit line saying how it went. A second run refuses at once, naming the holder.
A process killed outright (SIGKILL, a lost laptop) cannot give the lock back: the
next run is refused, and someone decides, by running deploys/unlock.py, that the
holder is gone. The lock is never broken silently.

The release is registered before the take is attempted: an SSH error after the lock
file was created, but before the answer came back, still ends in a release, which
removes the lock only if it carries this run's token (commands/lock.py). SIGTERM and
SIGHUP (a cancelled CI job, a closed terminal) are handled as Ctrl-C while the lock is
held, so the lock is released and the audit line written as after a Ctrl-C.

Planning runs for every host in parallel greenlets: the take runs once per run
(preflight.once_per_run), so one run takes one lock.
"""

from __future__ import annotations

import atexit
import datetime
import getpass
import json
import os
import secrets
import shlex
import socket
import subprocess
from dataclasses import dataclass, field

from pyinfra import inventory, logger, state
from pyinfra.api import StringCommand
from pyinfra.api.state import StateStage

from ..command_line import is_dry_run
from ..commands import lock as lock_commands
from ..config import knob
from ..connections import reconnect
from ..errors import refuse
from ..paths import REPO_ROOT
from ..preflight import once_per_run
from .termination import end_like_ctrl_c


@dataclass
class HeldLock:
    lb: object
    lock_file: str
    audit_log: str
    record: dict
    # What the run says of itself before it ends (a roll's failure, say).
    outcome: dict = field(default_factory=dict)
    # True once the host said "acquired"; False when it named another holder (nothing
    # of ours to release); None while unknown (the take may have happened unseen).
    taken: bool | None = None


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


def audited_command(words: list[str], data) -> str:
    """A one-off's command as the lock record and the audit log keep it: its name only
    (arguments may hold data not meant for a log), or the whole line when
    `deploy_audit_oneoff_arguments` says so."""
    if not words:
        return ""
    if knob(data, "deploy_audit_oneoff_arguments"):
        return shlex.join(words)
    return words[0]


def take_deploy_lock(
    action: str,
    tag: str = "",
    hosts: list[str] | None = None,
    detail: str = "",
    command: list[str] | None = None,
) -> None:
    """Hold the fleet's deploy lock for the rest of this run, or refuse naming its holder.

    + command: a one-off's words; the record keeps what audited_command() allows

    In a dry run nothing is taken or written; a held lock is only reported. Once per
    run: the first host's planning takes it, the others share it (or its refusal).
    """
    once_per_run(
        "deploy lock", lambda: _take_deploy_lock(action, tag, hosts or [], detail, command)
    )


def _take_deploy_lock(
    action: str, tag: str, hosts: list[str], detail: str, command: list[str] | None
) -> None:
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
        "hosts": hosts,
        "detail": detail,
        "pid": os.getpid(),
        "revision": repo_revision(),
    }
    if command is not None:
        record["command"] = audited_command(command, lb.data)
    held = HeldLock(lb, lock_file, audit_log, record)
    # Before the take: whatever interrupts it, the exit releases the lock if it is ours.
    atexit.register(_release_at_exit, held)
    # SIGTERM/SIGHUP too, from before the take: their default action would end the run
    # with no exit handler, leaving the lock held if it came while the take (or the
    # audit line after it) was on its way.
    end_like_ctrl_c(lambda name: held.outcome.setdefault("signal", name))
    acquire = lock_commands.acquire(lock_file, json.dumps(record, sort_keys=True))
    try:
        ok, output = run_on(lb, acquire)
        answered = True
    except Exception as error:  # noqa: BLE001 (the lock may exist: the exit releases it)
        ok, output, answered = False, f"{type(error).__name__}: {error}", False
    if not ok:
        # A refusal prints the holder's record; an error prints nothing on stdout.
        if answered and output and not output.endswith("acquired"):
            held.taken = False
            refuse(
                [
                    f"another deploy holds the lock on {lb.name} ({lock_file}): "
                    f"{describe_holder(output)}. If that run is gone, release the lock: "
                    "pyinfra -y INVENTORY deploys/unlock.py"
                ]
            )
        refuse([f"{lb.name}: could not take the deploy lock {lock_file}: {output or 'no answer'}"])
    held.taken = True
    _held[id(state)] = held
    _audit(held, {"event": "started"})
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
    if held.taken is False:
        return  # refused: the lock is another run's
    failed = sorted(h.name for h in state.failed_hosts)
    result = "failed" if failed else held.outcome.get("result") or _result_of_the_stage()
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
            break
    if ok and held.taken:
        _audit(held, finish)
    if ok and output.endswith("released"):
        logger.info(f"deploykit: deploy lock released on {held.lb.name}")
    elif ok and not held.taken:
        pass  # the take never happened: nothing to release
    elif ok:
        logger.warning(
            f"deploykit: the deploy lock on {held.lb.name} was no longer this run's "
            "(released by hand, then maybe taken by another run): left as it is"
        )
    else:
        logger.warning(
            f"deploykit: could not release the deploy lock on {held.lb.name} ({output}); "
            "release it with deploys/unlock.py"
        )


def _result_of_the_stage() -> str:
    """What a run that reported no result of its own (a provision, say) did: nothing
    when it never reached the operations (confirmation declined), else whether they all
    ran (pyinfra only sets the Disconnect stage once they have)."""
    stage = state.current_stage
    if stage < StateStage.Execute:
        return "not run"
    return "succeeded" if stage >= StateStage.Disconnect else "interrupted"


def release_stale_lock(host) -> bool:
    """The explicit unlock: print who held the lock, remove it, say so in the audit log
    (deploys/unlock.py, through rollout/run.py's callback)."""
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
