"""HAProxy runtime API command lines. Pure: strings in, strings out, no I/O.

Each wait is ONE shell script polling on the load balancer itself (shell.poll_until).

HAProxy 2.6 has no `wait ... srv-removable` (3.0+): draining is polled from `show stat`,
whose 5th field is scur (current sessions) and 18th is status.

Every state change is verified against the worker that serves after any reload: a
`set server` sent while HAProxy reloads can reach the old worker and be lost, because
the new worker loads the states saved just before (issue 13, item 7). The reload path
(templates/haproxy-state.sh.j2) marks a reload in RELOAD_MARKER from before it saves
the states until the new worker answers; a change is sent while no reload is marked and
holds once the newest worker itself reports it, with no reload marked meanwhile.
"""

from __future__ import annotations

import re
import shlex

from .shell import PRINT_WAITED, START_CLOCK, poll_until

SERVER_STATES = ("ready", "drain", "maint")
SHOW_STAT_SCUR = 5
# `show servers state` fields (1-based): srv_op_state and srv_admin_state.
SERVERS_STATE_OPERATIONAL = 6
SERVERS_STATE_ADMIN = 7
# srv_op_state of a server HAProxy sends traffic to (SRV_ST_RUNNING).
SERVER_RUNNING = 2
SHOW_STAT_STATUS = 18
# Responses a server sent by class (hrsp_1xx ... hrsp_5xx, hrsp_other), and the
# requests HAProxy retried away from it (wretr).
SHOW_STAT_RESPONSES = (40, 41, 42, 43, 44, 45)
SHOW_STAT_5XX = 44
SHOW_STAT_RETRIES = 16
# Exit status when HAProxy answers a `set server` with an error ("No such server.").
REFUSED = 5
# Exit status when a state change did not hold on the serving worker in time.
NOT_HELD = 6
# Present from just before a reload or stop saves the servers' states until the new
# worker answers the runtime API; written by templates/haproxy-state.sh.j2. In /run:
# root's, and gone after a reboot.
RELOAD_MARKER = "/run/deploykit-haproxy-reloading"
# How long a state change may wait for a reload in progress to finish.
STATE_CHANGE_TIMEOUT_S = 20
# `show servers state` admin-state bits a `set server ... state` forces: FMAINT (0x01)
# and FDRAIN (0x08); the other bits (inherited or configured maintenance) are not ours.
_FORCED_ADMIN_BITS = 0x01 | 0x08
_ADMIN_STATE_OF = {"ready": 0, "drain": 0x08, "maint": 0x01}
# Exit status of wait_for_another_server when no other server came UP in time.
LAST_SERVER = 7
# A server HAProxy sends traffic to: UP (also "UP 1/3", failing but not yet down), or
# without health checks.
SERVING_STATUS = "/^(UP|no check)/"


def runtime_api(socket: str, command: str) -> str:
    """Send one command to the admin socket and print the answer."""
    return f"echo {shlex.quote(command)} | socat -t 5 stdio unix-connect:{shlex.quote(socket)}"


def set_server_state(socket: str, backend: str, server: str, state: str) -> str:
    if state not in SERVER_STATES:
        raise ValueError(f"server state must be one of {SERVER_STATES}, not {state!r}")
    return runtime_api(socket, f"set server {backend}/{server} state {state}")


def serving_worker() -> str:
    """The pid of HAProxy's newest worker: the one that serves once a reload is done."""
    return 'pgrep -n -P "$(systemctl show --property MainPID --value haproxy.service)"'


def change_server_state(
    socket: str,
    backend: str,
    server: str,
    state: str,
    timeout_s: float = STATE_CHANGE_TIMEOUT_S,
    poll_s: float = 0.1,
    reload_marker: str = RELOAD_MARKER,
) -> str:
    """`set server ... state`, re-sent until the serving worker holds it (bounded).

    HAProxy answers a successful `set server` with nothing and an error with text, and
    socat exits 0 either way: an answer fails at once (REFUSED), in HAProxy's words.
    The change holds when one runtime API session shows the newest worker's pid and the
    server's admin state as asked, and no reload was marked before or after; otherwise
    (a reload, a restart, no answer) it is sent again until `timeout_s` (NOT_HELD).
    """
    send = set_server_state(socket, backend, server, state)  # checks `state`
    return _held_change(
        socket,
        backend,
        server,
        send,
        field=SERVERS_STATE_ADMIN,
        holds=f"[ $(($2 & {_FORCED_ADMIN_BITS})) = {_ADMIN_STATE_OF[state]} ]",
        what=f"{backend}/{server} state {state}",
        seen_as="admin state",
        timeout_s=timeout_s,
        poll_s=poll_s,
        reload_marker=reload_marker,
    )


def force_server_up(
    socket: str,
    backend: str,
    server: str,
    timeout_s: float = STATE_CHANGE_TIMEOUT_S,
    poll_s: float = 0.1,
    reload_marker: str = RELOAD_MARKER,
) -> str:
    """`set server ... health up`, re-sent until the serving worker has the server
    running (bounded, as change_server_state).

    A server leaving maintenance serves at once but one failed check from DOWN ("UP
    1/3"), and is fully UP only after HAProxy's next check, up to `inter` later. Sent
    once the kit's own check through the host's nginx passed, it makes the server fully
    UP now; HAProxy keeps checking, and `fall` failed checks take it out again. A
    running server is saved as such by a reload, and the new worker loads it fully UP.
    """
    send = runtime_api(socket, f"set server {backend}/{server} health up")
    return _held_change(
        socket,
        backend,
        server,
        send,
        field=SERVERS_STATE_OPERATIONAL,
        holds=f'[ "$2" = {SERVER_RUNNING} ]',
        what=f"{backend}/{server} health up",
        seen_as="operational state",
        timeout_s=timeout_s,
        poll_s=poll_s,
        reload_marker=reload_marker,
    )


def _held_change(
    socket: str,
    backend: str,
    server: str,
    send: str,
    field: int,
    holds: str,
    what: str,
    seen_as: str,
    timeout_s: float,
    poll_s: float,
    reload_marker: str,
) -> str:
    """`send`, re-sent until the newest worker's `show servers state` gives the server a
    `field` for which the shell test `holds` (on $2) is true, with no reload marked."""
    marker = shlex.quote(reload_marker)
    read = (
        f"{runtime_api(socket, f'show info; show servers state {backend}')} 2>/dev/null"
        f" | awk -v s={shlex.quote(server)}"
        f' \'$1 == "Pid:" {{ pid = $2 }} $4 == s && ${field} ~ /^[0-9]+$/ {{ value = ${field} }}'
        " END { print pid, value }'"
    )
    return (
        f"( start=$(date +%s%N); deadline=$((start + {int(timeout_s * 1000)} * 1000000)); "
        "seen=none; while :; do "
        f"if [ ! -e {marker} ] && answer=$({send} 2>/dev/null); then "
        f'[ -z "$answer" ] || {{ echo "haproxy refused: $answer" >&2; exit {REFUSED}; }}; '
        f"seen=$({read}); newest=$({serving_worker()}); set -- $seen; "
        f'if [ ! -e {marker} ] && [ $# = 2 ] && [ "$1" = "$newest" ] && {holds}; '
        "then break; fi; fi; "
        'if [ "$(date +%s%N)" -ge "$deadline" ]; then '
        f'echo {shlex.quote(what)}" did not hold within {timeout_s:g}s: HAProxy reloading or not '
        f'answering (worker, {seen_as}: $seen; newest worker: ${{newest:-none}})" >&2; '
        f"exit {NOT_HELD}; fi; sleep {poll_s:g}; done )"
    )


def _stat_field(socket: str, backend: str, server: str, field: int) -> str:
    return (
        f"{runtime_api(socket, 'show stat')}"
        f" | awk -F, -v b={shlex.quote(backend)} -v s={shlex.quote(server)}"
        f" '$1 == b && $2 == s {{ print ${field} }}'"
    )


def _poll(condition: str, observe: str, timeout_s: float, poll_s: float, what: str) -> str:
    """A loop that succeeds once `condition` holds, or exits TIMED_OUT saying what it saw."""
    return poll_until(
        condition,
        observe=observe,
        timed_out=f'echo "timed out after {timeout_s:g}s: {what}" >&2',
        timeout_s=timeout_s,
        poll_s=poll_s,
    )


def drain_server(
    socket: str,
    backend: str,
    server: str,
    timeout_s: float,
    poll_s: float = 0.1,
    change_timeout_s: float = STATE_CHANGE_TIMEOUT_S,
    reload_marker: str = RELOAD_MARKER,
) -> str:
    """drain, wait for 0 current sessions (bounded), then maint; both changes verified
    by change_server_state (bounded by `change_timeout_s`).

    maint follows even after a timeout: the old pair then finishes what it holds during
    its own graceful stop. The exit status (TIMED_OUT) lets the deploy warn about it.
    """
    change = {"timeout_s": change_timeout_s, "poll_s": poll_s, "reload_marker": reload_marker}
    drain = change_server_state(socket, backend, server, "drain", **change)
    maint = change_server_state(socket, backend, server, "maint", **change)
    observe = f"scur=$({_stat_field(socket, backend, server, SHOW_STAT_SCUR)})"
    wait = _poll('[ "$scur" = 0 ]', observe, timeout_s, poll_s, "$scur sessions left")
    return f"{drain} || exit $?; ( {wait} ); status=$?; {maint} || exit $?; exit $status"


def enable_server(
    socket: str,
    backend: str,
    server: str,
    timeout_s: float,
    poll_s: float = 0.1,
    change_timeout_s: float = STATE_CHANGE_TIMEOUT_S,
    reload_marker: str = RELOAD_MARKER,
    force_up: bool = False,
) -> str:
    """ready (verified, as in drain_server); with `force_up`, health up (verified, see
    force_server_up); then wait until HAProxy reports the server UP (bounded): at once
    when forced, else after its next passing check."""
    change = {"timeout_s": change_timeout_s, "poll_s": poll_s, "reload_marker": reload_marker}
    ready = change_server_state(socket, backend, server, "ready", **change)
    up = f"{force_server_up(socket, backend, server, **change)} || exit $?; " if force_up else ""
    observe = f"status=$({_stat_field(socket, backend, server, SHOW_STAT_STATUS)})"
    wait = _poll('[ "$status" = UP ]', observe, timeout_s, poll_s, "status $status")
    return f"{ready} || exit $?; {up}( {wait} )"


def wait_for_another_server(
    socket: str,
    backend: str,
    server: str,
    also_out: list[str],
    timeout_s: float,
    poll_s: float = 0.5,
) -> str:
    """Wait (bounded) until another server of the backend than `server` is serving:
    UP, and not in `also_out` (the servers this roll is taking out too). `server`'s own
    status does not count: one that flaps DOWN under load is still the last hope of an
    outage. On timeout, say which servers are down and exit LAST_SERVER: the caller
    refuses to drain the last server that may serve."""
    others = (
        '$1 == b && $2 != "BACKEND" && $2 != "FRONTEND" && $2 != s { '
        'if (index(out, " " $2 " ")) { down = down sep $2 " (being swapped)"; sep = ", "; next } '
        f"if (${SHOW_STAT_STATUS} ~ {SERVING_STATUS}) other = 1; "
        f'else {{ down = down sep $2 " " ${SHOW_STAT_STATUS}; sep = ", " }} }} '
        'END { if (other) print "ok"; else print (down == "" ? "no other server" : down) }'
    )
    observe = (
        f"seen=$({runtime_api(socket, 'show stat')}"
        f" | awk -F, -v b={shlex.quote(backend)} -v s={shlex.quote(server)}"
        f" -v out={shlex.quote(' ' + ' '.join(also_out) + ' ')} {shlex.quote(others)})"
    )
    message = f"no other server of backend {backend} is UP here after {timeout_s:g}s: $seen"
    return poll_until(
        '[ "$seen" = ok ]',
        observe=observe,
        timed_out=f'echo "{message}" >&2; {PRINT_WAITED}; exit {LAST_SERVER}',
        timeout_s=timeout_s,
        poll_s=poll_s,
    )


class CountersUntrusted(ValueError):
    """The canary gate's two reads of a server's counters do not give usable deltas."""


# One read of observe_server: the serving worker's pid, then the server's responses,
# 5xx and retries (counters since that worker started).
COUNTERS_READ = re.compile(r"(\d+),(\d+),(\d+),(\d+)")


def observe_server(socket: str, backend: str, server: str, window_s: float) -> str:
    """Read a server's counters twice, a window apart: responses, 5xx, retried requests,
    each read with the pid of the HAProxy worker that answered it (parse_observation
    turns them into counts, or refuses them).

    A request HAProxy replayed on another server (retry-on 500) never shows its client
    an error, nor counts among this server's responses (hrsp_*): it counts as a retry
    (wretr). Reading both catches a release that fails under real traffic even while
    no user sees it fail."""
    total = " + ".join(f"${field}" for field in SHOW_STAT_RESPONSES)
    counters = (
        f"{runtime_api(socket, 'show info; show stat')}"
        f" | awk -F, -v b={shlex.quote(backend)} -v s={shlex.quote(server)}"
        " '/^Pid: / { pid = substr($0, 6) }"
        f' $1 == b && $2 == s {{ row = ({total}) "," ${SHOW_STAT_5XX} "," ${SHOW_STAT_RETRIES} }}'
        ' END { print pid "," row }\''
    )
    return (
        f"before=$({counters}); {START_CLOCK}; sleep {window_s:g}; after=$({counters}); "
        'echo "before=$before after=$after"; '
        f"{PRINT_WAITED}"
    )


def parse_observation(output: str) -> tuple[int, int, int]:
    """responses, errors, retries during observe_server's window.

    Fails closed (CountersUntrusted) unless both reads parse, the same HAProxy worker
    answered both (a reload starts new workers from zero), and the deltas are sane:
    none negative (counters cleared), no more 5xx than responses."""
    values = dict(
        part.split("=", 1) for line in output.splitlines() for part in line.split() if "=" in part
    )
    reads = []
    for name in ("before", "after"):
        match = COUNTERS_READ.fullmatch(values.get(name, ""))
        if match is None:
            read = values.get(name, "")
            raise CountersUntrusted(f"the read {name} the window is unusable ({read!r})")
        reads.append([int(number) for number in match.groups()])
    (pid_before, *before), (pid_after, *after) = reads
    if pid_before != pid_after:
        raise CountersUntrusted(
            f"HAProxy reloaded during the window (worker {pid_before}, then {pid_after})"
        )
    responses, errors, retries = (later - earlier for earlier, later in zip(before, after))
    if min(responses, errors, retries) < 0:
        raise CountersUntrusted(f"counters went back during the window ({before} -> {after})")
    if errors > responses:
        raise CountersUntrusted(f"more 5xx ({errors}) than responses ({responses})")
    return responses, errors, retries


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
