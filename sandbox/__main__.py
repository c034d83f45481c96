"""Command line: python -m sandbox up | down | status | ssh HOST [COMMAND...]"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .cluster import KEY_FILE, KNOWN_HOSTS_FILE, STATE_FILE, Sandbox, Topology


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up", help="create or complete the sandbox (SANDBOX_WEB, SANDBOX_LB, SANDBOX_RELEASE…)"
    )
    up.add_argument("--rebuild", action="store_true", help="rebuild the host and registry images")
    commands.add_parser("down", help="remove everything labelled as the sandbox's")
    commands.add_parser("status", help="list the sandbox's containers")
    ssh = commands.add_parser("ssh", help="open SSH to a host as the deploy user")
    ssh.add_argument("host")
    ssh.add_argument("--user", default="deploy")
    ssh.add_argument("remote_command", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="sandbox: %(message)s")

    if args.command == "up":
        hosts = Sandbox().up(Topology.from_environ(), rebuild=args.rebuild)
        for host in hosts:
            print(
                f"  {host.name:<6} {host.group:<4} {host.release:<8} "
                f"ssh 127.0.0.1:{host.ssh_port}  {host.private_ip}"
            )
        print(f"sandbox: {len(hosts)} hosts up; inventory: inventories/sandbox.py")
    elif args.command == "down":
        Sandbox().down()
    elif args.command == "status":
        for name, status in Sandbox().status():
            print(f"{name:<32} {status}")
    elif args.command == "ssh":
        cluster = json.loads(STATE_FILE.read_text())
        remote_command = args.remote_command
        port = next(h["ssh_port"] for h in cluster["hosts"] if h["name"] == args.host)
        os.execvp(
            "ssh",
            [
                "ssh",
                "-i",
                str(KEY_FILE),
                "-o",
                f"UserKnownHostsFile={KNOWN_HOSTS_FILE}",
                "-p",
                str(port),
                f"{args.user}@127.0.0.1",
                *remote_command,
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
