"""The shell pieces every builder shares: quoting, timing and the bounded poll. Pure.

A wait is ONE shell script polling on the host itself, so it costs one SSH round trip
however long it lasts, and it prints how long it waited (``waited_ms=``): the roll
subtracts that from its wall time to tell its own overhead from the hosts' time
(rollout/engine.py, ``CommandResult.waited_s``).
"""

from __future__ import annotations

import math
import shlex

# Exit status of a wait that ran out of time; the deploy decides what that means.
TIMED_OUT = 3
# Exit status of a command killed on the host for running past its time limit: the one
# GNU timeout uses for a time-out (with SIGKILL, time_limit reports it in its place).
TIME_LIMIT_EXCEEDED = 124

START_CLOCK = "start=$(date +%s%N)"
# Milliseconds since START_CLOCK.
PRINT_WAITED = "echo waited_ms=$((($(date +%s%N) - start) / 1000000))"


def q(value: object) -> str:
    return shlex.quote(str(value))


def timed(command: str) -> str:
    """Run a command and report its duration as time spent waiting on the host; the exit
    status is the command's."""
    return f"{START_CLOCK}; {command}; status=$?; {PRINT_WAITED}; exit $status"


def poll_until(
    condition: str,
    *,
    timeout_s: float,
    poll_s: float,
    timed_out: str,
    observe: str = "",
    give_up: str = "",
) -> str:
    """Every `poll_s` seconds: run `observe` (read the state into variables), test
    `condition`; once it holds, print waited_ms and exit 0. After a failed test,
    `give_up` may exit at once (the container it waits on has stopped, say). After
    `timeout_s`, run `timed_out` (say what was last seen, on stderr), print waited_ms
    and exit TIMED_OUT."""
    observe = f"{observe}; " if observe else ""
    give_up = f"{give_up}; " if give_up else ""
    return (
        f"{START_CLOCK}; deadline=$((start + {int(timeout_s * 1000)} * 1000000)); "
        f"while :; do {observe}"
        f"if {condition}; then {PRINT_WAITED}; exit 0; fi; {give_up}"
        f'if [ "$(date +%s%N)" -ge "$deadline" ]; then {timed_out}; {PRINT_WAITED}; '
        f"exit {TIMED_OUT}; fi; sleep {poll_s:g}; done"
    )


def time_limit(command: str, limit_s: float) -> str:
    """Run `command` under a time limit enforced on the host itself: past `limit_s` its
    whole process group gets SIGKILL (coreutils timeout), and the status is
    TIME_LIMIT_EXCEEDED, with a last line saying so. A hung dockerd or socket then costs
    a step its limit, not the SSH connection's, and the roll can put the host back.

    SIGKILL, not SIGTERM first: the docker CLI catches SIGTERM and waits for the daemon
    to answer its cancelled request, which a wedged runtime never does. The shell that
    timeout watches dies of the SIGTERM, timeout exits at once without its delayed
    SIGKILL, and the surviving client holds the SSH channel open until the connection's
    own timeout. A client of a hung daemon has nothing to finish gracefully.

    The SIGKILL goes to timeout's process group, timeout included, so the status is 137;
    a 137 before the limit is the command's own (killed by someone else) and stays."""
    limit = max(1, math.ceil(limit_s))
    return (
        f"limit_start=$(date +%s); timeout --signal=KILL {limit} sh -c {q(command)}; "
        'status=$?; if [ "$status" -eq 137 ] && '
        f"[ $(($(date +%s) - limit_start)) -ge {limit} ]; then "
        f"echo {q(f'killed: exceeded its time limit of {limit}s on the host')} >&2; "
        f"exit {TIME_LIMIT_EXCEEDED}; fi; exit $status"
    )
