"""The engine's Fleet over pyinfra's own SSH connections (the same sudo, keys, and
known hosts as every operation)."""

from __future__ import annotations

import re
import signal
from contextlib import contextmanager
from typing import Callable, TypeVar

import gevent
from pyinfra import logger
from pyinfra.api import StringCommand

from ..connections import reconnect
from .engine import CommandResult

T = TypeVar("T")
EXIT_MARKER = "deploykit-exit="
EXIT_LINE = re.compile(rf"^{EXIT_MARKER}(\d+)$", re.M)


class PyinfraFleet:
    def __init__(self, state):
        self.state = state
        # Hosts whose SSH connection failed: the next command opens a new one first, so
        # a dropped connection does not also cost the steps that would put the host
        # back on its old release.
        self.broken: set[str] = set()

    def _host(self, name: str):
        host = self.state.inventory.get_host(name)
        if not host.connected:
            # Outside --limit, pyinfra did not connect it: the LBs still need driving.
            host.connect(raise_exceptions=True)
        return host

    def run(self, host: str, command: str, sudo: bool = False) -> CommandResult:
        # pyinfra reports success or failure only; the engine needs the exit status
        # (a wait that timed out is not an error that stops the roll), so the command
        # prints it last.
        wrapped = f"( {command} ); echo {EXIT_MARKER}$?"
        try:
            target = self._host(host)
            if host in self.broken:
                self._reconnect(target)
            _, output = target.run_shell_command(StringCommand(wrapped), _sudo=sudo, _timeout=600)
        except Exception as error:  # SSH dropped, host gone: the engine decides what next
            self.broken.add(host)
            return CommandResult(None, "", f"{type(error).__name__}: {error}")
        stdout = output.stdout
        match = None
        for match in EXIT_LINE.finditer(stdout):
            pass
        if match is None:
            # The command never finished: the connection went away under it.
            self.broken.add(host)
            return CommandResult(None, stdout, output.stderr)
        return CommandResult(int(match.group(1)), EXIT_LINE.sub("", stdout).strip(), output.stderr)

    def _reconnect(self, target) -> None:
        reconnect(target)
        self.broken.discard(target.name)
        self.log(f"{target.name}: reconnected")

    def parallel(self, calls: list[Callable[[], T]]) -> list[T]:
        if len(calls) == 1:
            return [calls[0]()]
        greenlets = [gevent.spawn(call) for call in calls]
        gevent.joinall(greenlets, raise_error=True)
        return [greenlet.value for greenlet in greenlets]

    def log(self, message: str) -> None:
        logger.info(f"    deploykit: {message}")


@contextmanager
def finish_host_on_interrupt(roll, fleet: PyinfraFleet):
    """Ctrl-C sets `roll.stop_requested`: the host in progress is finished (never left
    half-swapped), then the roll stops; a second Ctrl-C aborts at once."""

    def stop_after_this_host(signum, frame):
        roll.stop_requested = True
        fleet.log("interrupted: finishing the host in progress, then stopping (again: abort now)")
        signal.signal(signal.SIGINT, previous_handler)

    previous_handler = signal.signal(signal.SIGINT, stop_after_this_host)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
