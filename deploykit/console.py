"""An interactive console in a throwaway container of the app image, over SSH.

    bin/console inventories/sandbox.py                  # python3 on the first web host
    bin/console inventories/sandbox.py --host job1 -- sh
    bin/console inventories/staging.py --tag v2 -- python3 /app/manage.py shell

The inventory and its group_data are read as pyinfra's CLI reads them (the same
connection settings and app settings), then `ssh -t` runs `docker run --rm -it` with
the app's env file and network and the tag the host runs. ssh is exec'd: the terminal,
Ctrl-C and the exit status are the container's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .commands.docker import console
from .config import knob

APP_GROUPS = ("web", "job")
DEFAULT_COMMAND = ["python3"]


class ConsoleError(Exception):
    pass


def load_inventory(path: str):
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory_from_files

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


def build(argv: list[str], tty: bool) -> list[str]:
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
    data = target.data
    if not data.get("app_image"):
        raise ConsoleError(f"app_image is not set for {target.name} (group_data)")
    remote = console(
        data.get("app_image"),
        command or DEFAULT_COMMAND,
        network=knob(data, "app_network"),
        env_file=knob(data, "app_env_file"),
        tag=args.tag,
        tty=tty,
    )
    return ssh_command(data, data.get("ssh_hostname") or target.name, remote, tty)


def main(argv: list[str] | None = None) -> int:
    try:
        command = build(sys.argv[1:] if argv is None else argv, tty=sys.stdin.isatty())
    except ConsoleError as error:
        print(f"bin/console: {error}", file=sys.stderr)
        return 2
    if os.environ.get("DEPLOYKIT_CONSOLE_PRINT"):
        print(shlex.join(command))  # what would run, for a look before running it
        return 0
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
