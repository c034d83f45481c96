"""SIGTERM (a cancelled CI job) and SIGHUP (a closed terminal) end a run the way Ctrl-C
does.

Their default action ends the process at once: no atexit handler runs, so the deploy
lock would stay held and no audit line be written (rollout/lock.py), and a roll would
stop in the middle of a host. Once a run holds the lock, both take Ctrl-C's path
instead: whatever handles SIGINT at that moment handles them too. During a roll that
is the roll's own handler (finish the host in progress, then stop: pyinfra_fleet.py,
which also takes SIGTERM and SIGHUP itself); otherwise pyinfra's, which ends the run.
Either way the process exits normally, and atexit releases the lock; from then on the
stop signals are ignored, so a second one cannot cut that release short.

Python runs a signal handler in whichever greenlet is running when the signal arrives:
often a paramiko transport's green thread. pyinfra's Ctrl-C handler raises SystemExit
there, and threading swallows a SystemExit silently: that host's SSH transport died,
the main greenlet waited for it forever, and the lock stayed held. So whatever a stop
handler raises is delivered to the main greenlet, as gevent delivers a greenlet's
system errors, and the interrupted greenlet carries on.
"""

from __future__ import annotations

import atexit
import signal
from typing import Callable

import gevent
from greenlet import getcurrent

# The signals that end a run the way Ctrl-C does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def end_like_ctrl_c(on_signal: Callable[[str], None]) -> None:
    """From now on, SIGTERM and SIGHUP go to the SIGINT handler of the moment, after
    `on_signal(name)` (the audit line says which signal ended the run)."""

    def as_ctrl_c(signum, frame):
        on_signal(signal.Signals(signum).name)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signum, frame)
        else:
            _stop_in_main_greenlet(KeyboardInterrupt())

    ctrl_c = signal.getsignal(signal.SIGINT)
    if callable(ctrl_c):
        signal.signal(signal.SIGINT, raising_in_main_greenlet(ctrl_c))
    for signum in STOP_SIGNALS[1:]:
        signal.signal(signum, as_ctrl_c)
    # atexit runs last registered first: this runs before the lock's release, which the
    # caller registered just before.
    atexit.register(_ignore_stop_signals)


def raising_in_main_greenlet(handler: Callable) -> Callable:
    """`handler` as a signal handler whose exception (pyinfra's Ctrl-C handler raises
    SystemExit) ends the run from the main greenlet, whichever greenlet it ran in."""

    def deliver(signum, frame):
        try:
            handler(signum, frame)
        except BaseException as stop:  # noqa: BLE001 (re-raised where it ends the run)
            _stop_in_main_greenlet(stop)

    return deliver


def _stop_in_main_greenlet(stop: BaseException) -> None:
    hub = gevent.get_hub()
    if getcurrent() is hub.parent:  # the main greenlet: raise here
        raise stop
    # Throws into the main greenlet (the hub's parent); the current one resumes later.
    hub.handle_system_error(type(stop), stop, stop.__traceback__)


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
