"""Pinned SSH host keys: a run stops before anything is sent when a host presents another
key than the one pinned for it, and says what to check.

An inventory pins keys with two settings per host, ``ssh_known_hosts_file`` (a file kept
in the repository, filled by ``bin/pin-host-keys`` and checked out of band) and
``ssh_strict_host_key_checking = "yes"``, and calls ``guard_host_keys()``. pyinfra would
refuse such a host too, but only that one: its warning advises ``ssh-keygen -R`` (which
edits ~/.ssh/known_hosts, not the pinned file) and the run goes on with the other hosts.
The guard checks each host's key right before pyinfra connects to it, and a changed or
unpinned key stops the whole run: no command has run anywhere, and nothing at all (not
even a login) has been sent to that host.

    bin/pin-host-keys inventories/staging.py                 # pin hosts not pinned yet
    bin/pin-host-keys inventories/staging.py --replace web2  # after checking web2's new key
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import socket
import sys
from pathlib import Path

import gevent
import paramiko
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.state import BaseStateCallback
from pyinfra.context import ctx_state

from .console import load_inventory

# The key type pinned: every Debian 12 and 13 host has one, generated at install time.
PINNED_KEY_TYPE = "ssh-ed25519"
CONNECT_TIMEOUT = 5
KNOWN_HOSTS_HEADER = """\
# SSH host keys of this inventory's hosts, pinned: every deploy refuses a host whose key
# differs. Written by bin/pin-host-keys; each key was compared out of band (the host's
# console: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) before this file was committed.
"""


class HostKeyRefused(PyinfraError):
    """A host's key is not the pinned one (or none is pinned): nothing was sent."""


def known_hosts_name(address: str, port: int) -> str:
    """How known_hosts names a host: 192.0.2.21, or [127.0.0.1]:2211 off port 22."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key_base64: str) -> str:
    """SHA256:... as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(base64.b64decode(key_base64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def pinned_keys(known_hosts_file: str, name: str) -> dict[str, str]:
    """{key type: base64 key} pinned for `name` in the file ({} if none or no file)."""
    host_keys = paramiko.HostKeys()
    if os.path.exists(known_hosts_file):
        host_keys.load(known_hosts_file)
    found = host_keys.lookup(name) or {}
    return {key_type: found[key_type].get_base64() for key_type in found.keys()}


def presented_key(address: str, port: int, key_type: str = PINNED_KEY_TYPE) -> str | None:
    """The host's key of `key_type` (base64) from an SSH key exchange, which sends no
    credential; None when nothing answers (pyinfra then reports the host unreachable)."""
    try:
        sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
    except OSError:
        return None
    transport = paramiko.Transport(sock)
    try:
        transport.get_security_options().key_types = [key_type]
        transport.start_client(timeout=CONNECT_TIMEOUT * 2)
        return transport.get_remote_server_key().get_base64()
    except (paramiko.SSHException, EOFError, OSError) as error:
        if "no acceptable host key" in str(error).lower() or "incompatible" in str(error).lower():
            return ""  # it answers, but offers no key of the pinned type
        return None
    finally:
        transport.close()


def host_key_problem(
    host_name: str, address: str, port: int, known_hosts_file: str, inventory: str = ""
) -> str | None:
    """Why the run must not connect to this host, or None when its key is the pinned one
    (or it does not answer: pyinfra reports that)."""
    name = known_hosts_name(address, port)
    pin_command = f"bin/pin-host-keys {inventory or '<inventory>'}"
    pinned = pinned_keys(known_hosts_file, name)
    if PINNED_KEY_TYPE not in pinned:
        return (
            f"no SSH host key is pinned for {host_name} ({name}) in {known_hosts_file}: "
            f"run {pin_command}, compare the fingerprints it prints with the hosts' own "
            "(out of band), then commit the file"
        )
    presented = presented_key(address, port)
    if presented is None or presented == pinned[PINNED_KEY_TYPE]:
        return None
    shown = f"ED25519 {fingerprint(presented)}" if presented else "no ED25519 key at all"
    return (
        f"the SSH host key of {host_name} ({name}) has CHANGED; nothing was sent to it\n"
        f"  pinned in {known_hosts_file}: ED25519 {fingerprint(pinned[PINNED_KEY_TYPE])}\n"
        f"  {host_name} now presents: {shown}\n"
        f"  Either {host_name} was reinstalled or its keys regenerated, or something between "
        "here and it is intercepting the connection.\n"
        f"  Check the new fingerprint out of band (on {host_name}'s console: "
        "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub).\n"
        f"  Only if it matches, pin it: {pin_command} --replace {host_name}"
    )


def pinning_settings(host) -> tuple[str, int, str] | None:
    """(address, port, known_hosts file) of a host whose inventory pins its key."""
    data = host.data
    if not data.get("ssh_known_hosts_file") or data.get("ssh_strict_host_key_checking") != "yes":
        return None
    address = data.get("ssh_hostname") or host.name
    return address, int(data.get("ssh_port") or 22), str(data.get("ssh_known_hosts_file"))


class HostKeyGuard(BaseStateCallback):
    """Checks a host's key right before pyinfra connects to it."""

    def __init__(self, inventory_file: str):
        self.inventory_file = inventory_file

    def host_before_connect(self, state, host):  # type: ignore[override]
        settings = pinning_settings(host)
        if settings is None:
            return
        problem = host_key_problem(host.name, *settings, inventory=self.inventory_file)
        if problem:
            # Raised in pyinfra's connecting greenlet, re-raised by connect_all: pyinfra
            # prints the message. gevent's hub would print a traceback first; this is no
            # crash, so it is told not to.
            hub = gevent.get_hub()
            if not issubclass(HostKeyRefused, hub.NOT_ERROR):
                hub.NOT_ERROR = (*hub.NOT_ERROR, HostKeyRefused)
            raise HostKeyRefused(f"deploykit: stopping before any command runs: {problem}")


def guard_host_keys(inventory_file: str) -> None:
    """Called by an inventory file: check pinned host keys in this pyinfra run."""
    if not ctx_state.isset():
        return
    state = ctx_state.get()
    if getattr(state, "_deploykit_host_key_guard", False):
        return
    state._deploykit_host_key_guard = True
    guard = HostKeyGuard(_relative(inventory_file))
    # pyinfra (3.10) loads the inventory first and creates the state's callback list in
    # State.init, just before it connects: the guard joins the list right after that.
    initialise = state.init

    def init_then_guard(*args, **kwargs):
        initialise(*args, **kwargs)
        state.add_callback_handler(guard)

    state.init = init_then_guard


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- bin/pin-host-keys ------------------------------------------------------------------


def pin(inventory_file: str, replace: list[str], out=sys.stdout) -> int:
    """Pin every host of the inventory not pinned yet; re-pin the hosts in `replace`."""
    inventory = load_inventory(inventory_file)
    unknown = [name for name in replace if inventory.get_host(name, default=None) is None]
    if unknown:
        print(f"pin-host-keys: not in {inventory_file}: {', '.join(unknown)}", file=sys.stderr)
        return 2
    failures = 0
    files: dict[str, list[str]] = {}
    for host in inventory:
        settings = pinning_settings(host)
        if settings is None:
            print(
                f"pin-host-keys: {host.name} pins no key: set ssh_known_hosts_file and "
                'ssh_strict_host_key_checking = "yes" in its inventory data',
                file=sys.stderr,
            )
            failures += 1
            continue
        address, port, known_hosts_file = settings
        name = known_hosts_name(address, port)
        lines = files.setdefault(known_hosts_file, _read_lines(known_hosts_file))
        presented = presented_key(address, port)
        if not presented:
            print(f"  {host.name:<28} {name:<24} no answer with an ED25519 key", file=out)
            failures += 1
            continue
        pinned = pinned_keys(known_hosts_file, name).get(PINNED_KEY_TYPE)
        if pinned == presented:
            status = "pinned already"
        elif pinned and host.name not in replace:
            status = f"CHANGED (pinned {fingerprint(pinned)}): not replaced, see --replace"
            failures += 1
        else:
            lines[:] = [
                line
                for line in lines
                if not _names(line, name) and line.strip() != f"# {host.name}"
            ]
            lines += [f"# {host.name}\n", f"{name} {PINNED_KEY_TYPE} {presented}\n"]
            status = "REPLACED" if pinned else "new"
        print(f"  {host.name:<28} {name:<24} ED25519 {fingerprint(presented)}  {status}", file=out)
    for known_hosts_file, lines in files.items():
        text = "".join(lines)
        if text == "".join(_read_lines(known_hosts_file)):
            continue
        if not text.startswith("#"):
            text = KNOWN_HOSTS_HEADER + text
        Path(known_hosts_file).write_text(text)
    print(
        "\nCompare each fingerprint above with the host's own, out of band (its console or "
        "provider's\nboot log: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then commit "
        f"{', '.join(map(_relative, files)) or 'the known_hosts file'}.",
        file=out,
    )
    return 1 if failures else 0


def _read_lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines(keepends=True) if os.path.exists(path) else []


def _names(line: str, name: str) -> bool:
    fields = line.split()
    return bool(fields) and not line.startswith("#") and name in fields[0].split(",")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bin/pin-host-keys",
        description="Pin the SSH host keys of an inventory's hosts in its known_hosts file "
        "and print their fingerprints, to be compared out of band.",
    )
    parser.add_argument("inventory", help="inventory file, e.g. inventories/staging.py")
    parser.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="HOST",
        help="re-pin this host's changed key (only after checking it out of band)",
    )
    args = parser.parse_args(argv)
    return pin(args.inventory, args.replace)


if __name__ == "__main__":
    sys.exit(main())
