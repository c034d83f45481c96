"""HAProxy runtime API command lines. Pure: strings in, strings out, no I/O.

Each wait is ONE shell script polling on the load balancer itself, so a wait costs one
SSH round trip however long it lasts, and the script reports how long it waited
(``waited_ms=``) so the deploy can tell its own overhead from HAProxy's time.

HAProxy 2.6 has no `wait ... srv-removable` (3.0+): draining is polled from `show stat`,
whose 5th field is scur (current sessions) and 18th is status.
"""

from __future__ import annotations

import shlex

SERVER_STATES = ("ready", "drain", "maint")
SHOW_STAT_SCUR = 5
SHOW_STAT_STATUS = 18
# Responses a server sent by class (hrsp_1xx ... hrsp_5xx, hrsp_other), and the
# requests HAProxy retried away from it (wretr).
SHOW_STAT_RESPONSES = (40, 41, 42, 43, 44, 45)
SHOW_STAT_5XX = 44
SHOW_STAT_RETRIES = 16
# Exit status of a wait that ran out of time; the deploy decides what that means.
TIMED_OUT = 3
# Exit status when HAProxy answers a `set server` with an error ("No such server.").
REFUSED = 5


def runtime_api(socket: str, command: str) -> str:
    """Send one command to the admin socket and print the answer."""
    return f"echo {shlex.quote(command)} | socat -t 5 stdio unix-connect:{shlex.quote(socket)}"


def set_server_state(socket: str, backend: str, server: str, state: str) -> str:
    if state not in SERVER_STATES:
        raise ValueError(f"server state must be one of {SERVER_STATES}, not {state!r}")
    return runtime_api(socket, f"set server {backend}/{server} state {state}")


def _accepted(command: str) -> str:
    """HAProxy answers a successful `set server` with nothing and an error with text, and
    socat exits 0 either way: any answer is a failure, shown as HAProxy's own words."""
    return (
        f'answer=$({command}) || exit $?; [ -z "$answer" ] || '
        f'{{ echo "haproxy refused: $answer" >&2; exit {REFUSED}; }}'
    )


def _stat_field(socket: str, backend: str, server: str, field: int) -> str:
    return (
        f"{runtime_api(socket, 'show stat')}"
        f" | awk -F, -v b={shlex.quote(backend)} -v s={shlex.quote(server)}"
        f" '$1 == b && $2 == s {{ print ${field} }}'"
    )


def _poll(condition: str, observe: str, timeout_s: float, poll_s: float, what: str) -> str:
    """A loop that succeeds once `condition` holds, or exits TIMED_OUT saying what it saw."""
    return (
        f"start=$(date +%s%N); deadline=$((start + {int(timeout_s * 1000)} * 1000000)); "
        f"while :; do {observe}; "
        f"if {condition}; then echo waited_ms=$((($(date +%s%N) - start) / 1000000)); break; fi; "
        f'if [ "$(date +%s%N)" -ge "$deadline" ]; then '
        f'echo "timed out after {timeout_s:g}s: {what}" >&2; '
        f"echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit {TIMED_OUT}; fi; "
        f"sleep {poll_s:g}; done"
    )


def drain_server(
    socket: str, backend: str, server: str, timeout_s: float, poll_s: float = 0.1
) -> str:
    """drain, wait for 0 current sessions (bounded), then maint.

    maint follows even after a timeout: the old pair then finishes what it holds during
    its own graceful stop. The exit status (TIMED_OUT) lets the deploy warn about it.
    """
    drain = set_server_state(socket, backend, server, "drain")
    maint = set_server_state(socket, backend, server, "maint")
    observe = f"scur=$({_stat_field(socket, backend, server, SHOW_STAT_SCUR)})"
    wait = _poll('[ "$scur" = 0 ]', observe, timeout_s, poll_s, "$scur sessions left")
    return f"{_accepted(drain)}; ( {wait} ); status=$?; {maint} >/dev/null; exit $status"


def enable_server(
    socket: str, backend: str, server: str, timeout_s: float, poll_s: float = 0.1
) -> str:
    """ready, then wait until health checks report the server UP (bounded)."""
    ready = set_server_state(socket, backend, server, "ready")
    observe = f"status=$({_stat_field(socket, backend, server, SHOW_STAT_STATUS)})"
    wait = _poll('[ "$status" = UP ]', observe, timeout_s, poll_s, "status $status")
    return f"{_accepted(ready)}; ( {wait} )"


def observe_server(socket: str, backend: str, server: str, window_s: float) -> str:
    """Count what a server answered during a window: responses, 5xx, retried requests.

    A request HAProxy replayed on another server (retry-on 500) never shows its client
    an error, nor counts among this server's responses (hrsp_*): it counts as a retry
    (wretr). Reading both catches a release that fails under real traffic even while
    no user sees it fail."""
    total = " + ".join(f"${field}" for field in SHOW_STAT_RESPONSES)
    counters = (
        f"{runtime_api(socket, 'show stat')}"
        f" | awk -F, -v b={shlex.quote(backend)} -v s={shlex.quote(server)}"
        f" '$1 == b && $2 == s {{ print {total}, ${SHOW_STAT_5XX}, ${SHOW_STAT_RETRIES} }}'"
    )
    return (
        f"before=$({counters}); start=$(date +%s%N); sleep {window_s:g}; after=$({counters}); "
        "set -- $before $after; "
        'echo "responses=$(($4 - $1)) errors=$(($5 - $2)) retries=$(($6 - $3))"; '
        "echo waited_ms=$((($(date +%s%N) - start) / 1000000))"
    )


def parse_observation(output: str) -> tuple[int, int, int]:
    """responses, errors, retries from observe_server's output."""
    values = dict(
        part.split("=", 1) for line in output.splitlines() for part in line.split() if "=" in part
    )
    return int(values["responses"]), int(values["errors"]), int(values["retries"])


def show_servers(socket: str, backend: str) -> str:
    """name, status, scur of each server of the backend, one per line."""
    return (
        f"{runtime_api(socket, 'show stat')}"
        f" | awk -F, -v b={shlex.quote(backend)}"
        f" '$1 == b && $2 != \"BACKEND\" {{ print $2, ${SHOW_STAT_STATUS}, ${SHOW_STAT_SCUR} }}'"
    )


def parse_show_servers(output: str) -> dict[str, tuple[str, int]]:
    """Output of show_servers → {server: (status, sessions)}. Status may be "UP 1/2"."""
    servers = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1].isdigit():
            servers[parts[0]] = (" ".join(parts[1:-1]), int(parts[-1]))
    return servers
