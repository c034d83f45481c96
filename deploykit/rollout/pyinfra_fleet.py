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

from ..commands.shell import time_limit
from ..connections import reconnect
from .engine import CommandResult
from .termination import STOP_SIGNALS

T = TypeVar("T")
EXIT_MARKER = "deploykit-exit="
EXIT_LINE = re.compile(rf"^{EXIT_MARKER}(\d+)$", re.M)
# A command without a time limit of its own waits this long for its answer over SSH.
UNLIMITED_SSH_TIMEOUT_S = 600
# With a limit, the answer of a command killed on the host arrives right after the limit
# (commands/shell.py, time_limit): this much more, and the connection itself is deemed
# lost.
SSH_GRACE_S = 30


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

    def run(
        self, host: str, command: str, sudo: bool = False, limit_s: float | None = None
    ) -> CommandResult:
        ssh_timeout = UNLIMITED_SSH_TIMEOUT_S
        if limit_s is not None:
            command = time_limit(command, limit_s)
            ssh_timeout = int(limit_s) + SSH_GRACE_S
        # pyinfra reports success or failure only; the engine needs the exit status
        # (a wait that timed out is not an error that stops the roll), so the command
        # prints it last.
        wrapped = f"( {command} ); echo {EXIT_MARKER}$?"
        try:
            target = self._host(host)
            if host in self.broken:
                self._reconnect(target)
            _, output = target.run_shell_command(
                StringCommand(wrapped), _sudo=sudo, _timeout=ssh_timeout
            )
        except Exception as error:  # SSH dropped, host gone: the engine decides what next
            self.broken.add(host)
            return CommandResult(None, "", f"{type(error).__name__}: {error}")
        except BaseException:
            # Interrupted in the middle of a command (a timeout, a kill): what is left on
            # the connection is unknown, so the next command opens a new one.
            self.broken.add(host)
            raise
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
        return supervise(calls)

    def background(self, call: Callable[[], T]) -> Callable[[], T]:
        greenlet = gevent.spawn(_outcome, call)

        def wait() -> T:
            _join_all([greenlet])
            value, error = greenlet.value
            if error is not None:
                raise error
            return value

        return wait

    def log(self, message: str) -> None:
        logger.info(f"    deploykit: {message}")


def supervise(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in greenlets of their own and wait for EVERY one of them, whatever
    happens: the results in order, or else the first error, raised once all are done.

    A host's greenlet is never left running unsupervised: when one raises, its siblings
    finish their host (or go back, as the engine tells them); when the waiting greenlet
    itself is interrupted (a kill, a timeout), it keeps waiting for them, then raises."""
    if len(calls) == 1:
        return [calls[0]()]
    greenlets = [gevent.spawn(_outcome, call) for call in calls]
    _join_all(greenlets)
    outcomes = [greenlet.value for greenlet in greenlets]
    for _, error in outcomes:
        if error is not None:
            raise error
    return [value for value, _ in outcomes]


def _join_all(greenlets: list) -> None:
    """Wait until every greenlet has ended, even when the waiting one is interrupted
    (then its error is raised, once all have ended)."""
    interrupted: BaseException | None = None
    while not all(greenlet.dead for greenlet in greenlets):
        try:
            gevent.joinall(greenlets)
        except BaseException as error:  # noqa: BLE001 (raised below, once all are done)
            interrupted = interrupted or error
    if interrupted is not None:
        raise interrupted


def _outcome(call: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """A call's value or its error, as a value: gevent would throw a KeyboardInterrupt
    or SystemExit that ends a greenlet into the main one, out of the roll's hands."""
    try:
        return call(), None
    except BaseException as error:  # noqa: BLE001 (raised by supervise)
        return None, error


@contextmanager
def finish_host_on_interrupt(
    roll, fleet: PyinfraFleet, on_signal: Callable[[str], None] = lambda name: None
):
    """Ctrl-C, SIGTERM (a cancelled CI job) or SIGHUP (a closed terminal) sets
    `roll.stop_requested`: the host in progress is finished (never left half-swapped),
    then the roll stops and the run ends as a failed one: the lock is released and the
    audit line written (rollout/lock.py). A second signal has the hosts in progress go
    back to their old release at their next step (each step is time-limited on the
    host), then the roll stops. Only SIGKILL can leave a host half-swapped.
    `on_signal(name)` learns of each signal (for the audit line)."""
    received: list[str] = []

    def stop_rolling(signum, frame):
        received.append(signal.Signals(signum).name)
        on_signal(received[-1])
        if len(received) == 1:
            roll.stop_requested = True
            fleet.log(
                f"{received[-1]}: finishing the host in progress, then stopping "
                "(again: put it back on its old release now)"
            )
        elif len(received) == 2:
            roll.stop_now = f"interrupted twice ({', '.join(received)})"
            fleet.log(f"{received[-1]}: the hosts in progress go back to their old release")
        else:
            fleet.log(f"{received[-1]}: still putting the hosts in progress back; please wait")

    previous = {signum: signal.signal(signum, stop_rolling) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
