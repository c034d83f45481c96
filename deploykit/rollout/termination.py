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
"""

from __future__ import annotations

import atexit
import signal
from typing import Callable

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
            raise KeyboardInterrupt

    for signum in STOP_SIGNALS[1:]:
        signal.signal(signum, as_ctrl_c)
    # atexit runs last registered first: this runs before the lock's release, which the
    # caller registered just before.
    atexit.register(_ignore_stop_signals)


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
