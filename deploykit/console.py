"""An interactive console in a throwaway container of the app image, over SSH.

    bin/console inventories/sandbox.py                  # python3 on the first web host
    bin/console inventories/sandbox.py --host job1 -- sh
    bin/console inventories/staging.py --tag v2 -- python3 /app/manage.py shell

The inventory and its group_data are read as pyinfra's CLI reads them (the same
connection settings and app settings), then `ssh -t` runs `docker run --rm -it` with
the app's env file and network and the tag the host runs. The terminal, Ctrl-C and the
exit status are the container's.

A console opens a shell with the production secrets, so it is audited like a deploy
(it takes no lock: it changes nothing by itself): one line in the audit log on the
first load balancer when it starts (who, host, tag, the command's name) and one when it
ends (its exit status). The tag is read from the host first, so the line names the
tag that runs; no audit line, no console.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass

from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files

from .commands import lock as lock_commands
from .commands.containers import running_versions
from .commands.oneoff import console
from .commands.workers import WORKER_ROLE
from .config import knob
from .rollout.lock import audited_command, deployer

APP_GROUPS = ("web", "job")
DEFAULT_COMMAND = ["python3"]


class ConsoleError(Exception):
    pass


def load_inventory(path: str):
    if not os.path.isfile(path):
        raise ConsoleError(f"inventory {path} does not exist")
    # pyinfra's CLI executes the inventory and group_data files within a State.
    with ctx_state.use(State(check_for_changes=False)):
        return make_inventory_from_files(path, cwd=os.getcwd())


def pick_host(inventory, name: str | None):
    if name:
        target = inventory.get_host(name, default=None)
        if target is None:
            raise ConsoleError(f"host {name!r} is not in the inventory")
    else:
        web = inventory.get_group("web", default=None) or []
        if not web:
            raise ConsoleError("the inventory has no web host: name one with --host")
        target = web[0]
    if not set(APP_GROUPS) & set(target.groups):
        raise ConsoleError(f"{target.name} is in neither group web nor job: no app runs there")
    return target


def ssh_command(data, hostname: str, remote: str, tty: bool) -> list[str]:
    """ssh with the host's pyinfra connection settings."""
    argv = ["ssh", "-t" if tty else "-T"]
    if data.get("ssh_port"):
        argv += ["-p", str(data.get("ssh_port"))]
    if data.get("ssh_key"):
        argv += ["-i", str(data.get("ssh_key")), "-o", "IdentitiesOnly=yes"]
    if data.get("ssh_known_hosts_file"):
        argv += ["-o", f"UserKnownHostsFile={data.get('ssh_known_hosts_file')}"]
    if data.get("ssh_strict_host_key_checking"):
        argv += ["-o", f"StrictHostKeyChecking={data.get('ssh_strict_host_key_checking')}"]
    user = data.get("ssh_user")
    target = f"{user}@{hostname}" if user else hostname
    return [*argv, target, remote]


@dataclass
class ConsolePlan:
    inventory: object
    target: object
    command: list[str]
    tag: str | None
    tty: bool

    def ssh(self, tag: str | None = None) -> list[str]:
        """The ssh line that opens the console (the tag the host runs, unless `tag`)."""
        data = self.target.data
        remote = console(
            data.get("app_image"),
            self.command or DEFAULT_COMMAND,
            network=knob(data, "app_network"),
            env_file=knob(data, "app_env_file"),
            tag=tag or self.tag,
            tty=self.tty,
        )
        return ssh_command(data, address(self.target), remote, self.tty)


def address(target) -> str:
    return target.data.get("ssh_hostname") or target.name


def build(argv: list[str], tty: bool) -> ConsolePlan:
    parser = argparse.ArgumentParser(
        prog="bin/console",
        description="Open a shell or REPL in a throwaway container of the app image.",
    )
    parser.add_argument("inventory", help="inventory file, e.g. inventories/staging.py")
    parser.add_argument("--host", help="a web or job host (default: the first web host)")
    parser.add_argument("--tag", help="image tag (default: the one the host runs)")
    parser.add_argument("command", nargs="*", help="after --; default: python3")
    # Everything after `--` is the command, even words that look like options (-c).
    if "--" in argv:
        split = argv.index("--")
        args = parser.parse_args(argv[:split])
        command = argv[split + 1 :]
    else:
        args = parser.parse_args(argv)
        command = args.command
    inventory = load_inventory(args.inventory)
    target = pick_host(inventory, args.host)
    if not target.data.get("app_image"):
        raise ConsoleError(f"app_image is not set for {target.name} (group_data)")
    return ConsolePlan(inventory, target, command or list(DEFAULT_COMMAND), args.tag, tty)


def running_tag(plan: ConsolePlan) -> str:
    """The version (TAG@DIGEST, or TAG unpinned) the target host runs (its app, else
    its workers), read over SSH: the console runs exactly that image."""
    script = " || ".join(
        f"{running_versions(role)} 2>/dev/null | tail -n 1 | grep ."
        for role in ("app", WORKER_ROLE)
    )
    found = run_quietly(ssh_command(plan.target.data, address(plan.target), script, tty=False))
    tag = found.stdout.strip()
    if found.returncode != 0 or not tag:
        detail = f" ({found.stderr.strip()})" if found.stderr.strip() else ""
        raise ConsoleError(
            f"no app or worker container runs on {plan.target.name}; give --tag TAG{detail}"
        )
    return tag


def run_quietly(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
    )


class ConsoleAudit:
    """The console's two lines in the deploy audit log, on the first load balancer."""

    def __init__(self, plan: ConsolePlan, tag: str):
        lbs = plan.inventory.get_group("lb", default=None) or []
        if not lbs:
            raise ConsoleError("no hosts in group 'lb': the audit log lives on the first one")
        self.lb = lbs[0]
        self.record = {
            "action": "console",
            "who": deployer(),
            "hosts": [plan.target.name],
            "tag": tag,
            "command": audited_command(plan.command, self.lb.data),
            "pid": os.getpid(),
        }

    def write(self, **entry) -> tuple[bool, str]:
        line = json.dumps({**self.record, **entry, "at": _now()}, sort_keys=True)
        append = lock_commands.audit_append(knob(self.lb.data, "deploy_audit_log"), line)
        remote = f"sudo -n sh -c {shlex.quote(append)}"
        try:
            done = run_quietly(ssh_command(self.lb.data, address(self.lb), remote, tty=False))
        except (OSError, subprocess.SubprocessError) as error:
            return False, str(error)
        return done.returncode == 0, done.stderr.strip()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_audited(plan: ConsolePlan) -> int:
    """Audit the start, run the console, audit the end with its exit status."""
    tag = plan.tag or running_tag(plan)
    audit = ConsoleAudit(plan, tag)
    ok, problem = audit.write(event="started")
    if not ok:
        raise ConsoleError(
            f"could not write the audit log on {audit.lb.name}, so no console was opened"
            + (f": {problem}" if problem else "")
        )
    ended_by: list[str] = []
    sys.stdout.flush()
    child = subprocess.Popen(plan.ssh(tag))

    def forward(signum, frame):
        # A closed terminal or a kill ends the console, not this process: the end must
        # still reach the audit log.
        ended_by.append(signal.Signals(signum).name)
        if child.poll() is None:
            child.send_signal(signum)

    # Ctrl-C and Ctrl-\ belong to the console (ssh sends them on, or the remote
    # terminal gets them as keys); SIGTERM and SIGHUP end it.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGQUIT: signal.signal(signal.SIGQUIT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    finish = {"event": "finished", "result": f"exited {status}"}
    if ended_by:
        finish["signal"] = ended_by[0]
    ok, problem = audit.write(**finish)
    if not ok:
        print(
            f"bin/console: could not write the console's end to the audit log on "
            f"{audit.lb.name}: {problem or 'no answer'}",
            file=sys.stderr,
        )
    # A console killed by a signal ends as a shell reports it: 128 + the signal.
    return status if status >= 0 else 128 - status


def main(argv: list[str]) -> int:
    try:
        plan = build(argv, tty=sys.stdin.isatty())
        if os.environ.get("DEPLOYKIT_CONSOLE_PRINT"):
            print(shlex.join(plan.ssh()))  # what would run, for a look: nothing connects
            return 0
        return run_audited(plan)
    except ConsoleError as error:
        print(f"bin/console: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
