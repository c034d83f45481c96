"""HAProxy runtime API command lines: the exact strings sent to a load balancer, then the
scripts run for real with `sh -c` (dash, as pyinfra runs them on Debian) against a fake
`socat` that answers `show stat` from canned CSV and records every request it gets."""

from __future__ import annotations

import subprocess

import pytest

from deploykit.commands.haproxy import (
    TIMED_OUT,
    drain_server,
    enable_server,
    parse_show_servers,
    runtime_api,
    set_server_state,
    show_servers,
)
from tests.unit.fakes import install_stubs, run_with_stubs, waited_ms

SOCKET = "/run/haproxy/admin.sock"
SHOW_STAT = "echo 'show stat' | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock"


# -- exact command strings ----------------------------------------------------------------


def test_runtime_api_pipes_the_command_into_socat():
    assert runtime_api(SOCKET, "show stat") == SHOW_STAT


def test_runtime_api_quotes_a_socket_path_with_a_space():
    assert runtime_api("/run/my haproxy/admin.sock", "show info") == (
        "echo 'show info' | socat -t 5 stdio unix-connect:'/run/my haproxy/admin.sock'"
    )


@pytest.mark.parametrize("state", ["ready", "drain", "maint"])
def test_set_server_state(state):
    assert set_server_state(SOCKET, "web", "web1", state) == (
        f"echo 'set server web/web1 state {state}'"
        " | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock"
    )


def test_set_server_state_quotes_a_server_name_with_a_quote():
    assert set_server_state(SOCKET, "web", "o'brien", "drain") == (
        "echo 'set server web/o'\"'\"'brien state drain'"
        " | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock"
    )


def test_set_server_state_rejects_an_unknown_state():
    with pytest.raises(ValueError, match="'up'"):
        set_server_state(SOCKET, "web", "web1", "up")


def test_drain_server_drains_polls_scur_then_sets_maint_whatever_happened():
    assert drain_server(SOCKET, "web", "web1", 30) == (
        "answer=$(echo 'set server web/web1 state drain'"
        " | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock)"
        ' || exit $?; [ -z "$answer" ] || { echo "haproxy refused: $answer" >&2; exit 5; };'
        " ( start=$(date +%s%N); deadline=$((start + 30000 * 1000000));"
        f" while :; do scur=$({SHOW_STAT}"
        " | awk -F, -v b=web -v s=web1 '$1 == b && $2 == s { print $5 }');"
        ' if [ "$scur" = 0 ]; then'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); break; fi;"
        ' if [ "$(date +%s%N)" -ge "$deadline" ]; then'
        ' echo "timed out after 30s: $scur sessions left" >&2;'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 3; fi;"
        " sleep 0.1; done ); status=$?;"
        " echo 'set server web/web1 state maint'"
        " | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock >/dev/null; exit $status"
    )


def test_drain_server_formats_a_fractional_timeout_and_poll():
    command = drain_server(SOCKET, "web", "web1", 0.3, poll_s=0.05)
    assert "deadline=$((start + 300 * 1000000))" in command
    assert 'echo "timed out after 0.3s: $scur sessions left" >&2' in command
    assert "sleep 0.05; done" in command


def test_drain_server_quotes_backend_and_server_in_awk():
    command = drain_server(SOCKET, "my web", "web 1", 30)
    assert "awk -F, -v b='my web' -v s='web 1' '$1 == b && $2 == s { print $5 }'" in command
    assert command.startswith("answer=$(echo 'set server my web/web 1 state drain' | socat")


def test_enable_server_sets_ready_then_waits_for_up():
    assert enable_server(SOCKET, "web", "web1", 30) == (
        "answer=$(echo 'set server web/web1 state ready'"
        " | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock)"
        ' || exit $?; [ -z "$answer" ] || { echo "haproxy refused: $answer" >&2; exit 5; };'
        " ( start=$(date +%s%N); deadline=$((start + 30000 * 1000000));"
        f" while :; do status=$({SHOW_STAT}"
        " | awk -F, -v b=web -v s=web1 '$1 == b && $2 == s { print $18 }');"
        ' if [ "$status" = UP ]; then'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); break; fi;"
        ' if [ "$(date +%s%N)" -ge "$deadline" ]; then'
        ' echo "timed out after 30s: status $status" >&2;'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 3; fi;"
        " sleep 0.1; done )"
    )


def test_show_servers_prints_name_status_and_sessions_of_each_server():
    assert show_servers(SOCKET, "web") == (
        f"{SHOW_STAT}" " | awk -F, -v b=web '$1 == b && $2 != \"BACKEND\" { print $2, $18, $5 }'"
    )


def test_parse_show_servers():
    output = "web1 UP 0\nweb2 DRAIN 3\nweb3 UP 1/2 12\n\nnot a server line\n"
    assert parse_show_servers(output) == {
        "web1": ("UP", 0),
        "web2": ("DRAIN", 3),
        "web3": ("UP 1/2", 12),
    }


def test_parse_show_servers_of_nothing_is_empty():
    assert parse_show_servers("") == {}


# -- the scripts, run with sh against a fake socat ----------------------------------------

FAKE_SOCAT = r"""#!/bin/sh
request=$(cat)
printf '%s\n' "$request" >> "$STUB_DIR/requests"
for arg in "$@"; do printf '[%s]' "$arg"; done >> "$STUB_DIR/args"; echo >> "$STUB_DIR/args"
case "$request" in
"show stat")
    n=$(( $(cat "$STUB_DIR/polls" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$STUB_DIR/polls"
    if [ -f "$STUB_DIR/stat.$n" ]; then cat "$STUB_DIR/stat.$n"; else cat "$STUB_DIR/stat"; fi ;;
*)
    if [ -f "$STUB_DIR/refuse" ]; then echo "socat: connect(): Permission denied" >&2; exit 1; fi
    if [ -f "$STUB_DIR/unknown" ]; then echo "No such server."; echo; exit 0; fi
    echo ;;
esac
"""

HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
    "wretr,wredis,status,weight,act,bck"
)


def stat_row(proxy: str, server: str, scur: int, status: str) -> str:
    fields = [proxy, server, "0", "0", str(scur)] + ["0"] * 12 + [status, "1", "1", "0"]
    assert len(fields) == 21 and fields[4] == str(scur) and fields[17] == status
    return ",".join(fields)


def show_stat(web1_scur: int, web1_status: str) -> str:
    """web/web1 as given; the same server name in another backend is idle and UP, so a
    script that ignored the backend would finish early."""
    return (
        "\n".join(
            [
                HEADER,
                stat_row("http-in", "FRONTEND", 7, "OPEN"),
                stat_row("web", "web1", web1_scur, web1_status),
                stat_row("web", "web2", 4, "UP"),
                stat_row("web", "BACKEND", web1_scur + 4, "UP"),
                stat_row("static", "web1", 0, "UP"),
            ]
        )
        + "\n"
    )


@pytest.fixture
def lb(tmp_path):
    """A fake load balancer: `socat` on PATH, canned `show stat`, recorded requests."""
    bin_dir = install_stubs(tmp_path, {"socat": FAKE_SOCAT})

    class FakeLB:
        def show_stat(self, text: str, poll: int | None = None):
            (tmp_path / ("stat" if poll is None else f"stat.{poll}")).write_text(text)

        def refuse_commands(self):
            (tmp_path / "refuse").write_text("")

        def forget_servers(self):
            (tmp_path / "unknown").write_text("")

        def run(self, script: str) -> subprocess.CompletedProcess:
            return run_with_stubs(script, bin_dir, tmp_path)

        @property
        def requests(self) -> list[str]:
            path = tmp_path / "requests"
            return path.read_text().splitlines() if path.exists() else []

        @property
        def args(self) -> list[str]:
            return (tmp_path / "args").read_text().splitlines()

        @property
        def polls(self) -> int:
            return int((tmp_path / "polls").read_text())

    return FakeLB()


def test_runtime_api_gives_socat_the_command_on_stdin_and_one_socket_argument(lb):
    result = lb.run(runtime_api("/run/my haproxy/admin.sock", "set server web/o'brien state drain"))
    assert result.returncode == 0, result.stderr
    assert lb.requests == ["set server web/o'brien state drain"]
    assert lb.args == ["[-t][5][stdio][unix-connect:/run/my haproxy/admin.sock]"]


def test_drain_exits_0_and_reports_its_wait_when_no_session_is_left(lb):
    lb.show_stat(show_stat(0, "DRAIN"))
    result = lb.run(drain_server(SOCKET, "web", "web1", 5, poll_s=0.05))
    assert result.returncode == 0, result.stderr
    assert 0 <= waited_ms(result.stdout) < 5000
    assert result.stderr == ""
    assert lb.requests == [
        "set server web/web1 state drain",
        "show stat",
        "set server web/web1 state maint",
    ]


def test_drain_polls_until_the_sessions_are_gone(lb):
    lb.show_stat(show_stat(3, "DRAIN"), poll=1)
    lb.show_stat(show_stat(1, "DRAIN"), poll=2)
    lb.show_stat(show_stat(0, "DRAIN"))
    result = lb.run(drain_server(SOCKET, "web", "web1", 5, poll_s=0.05))
    assert result.returncode == 0, result.stderr
    assert lb.polls == 3
    assert lb.requests[-1] == "set server web/web1 state maint"


def test_drain_times_out_with_sessions_left_and_still_sets_maint(lb):
    lb.show_stat(show_stat(5, "DRAIN"))
    result = lb.run(drain_server(SOCKET, "web", "web1", 0.3, poll_s=0.05))
    assert result.returncode == TIMED_OUT == 3
    assert result.stderr == "timed out after 0.3s: 5 sessions left\n"
    assert waited_ms(result.stdout) >= 300
    assert lb.polls >= 2
    assert lb.requests[0] == "set server web/web1 state drain"
    assert lb.requests[-1] == "set server web/web1 state maint"


def test_drain_that_cannot_reach_the_socket_fails_without_waiting(lb):
    lb.refuse_commands()
    lb.show_stat(show_stat(0, "UP"))
    result = lb.run(drain_server(SOCKET, "web", "web1", 5, poll_s=0.05))
    assert result.returncode == 1
    assert "waited_ms" not in result.stdout
    assert "show stat" not in lb.requests


def test_enable_exits_0_once_the_server_is_up(lb):
    lb.show_stat(show_stat(0, "MAINT"), poll=1)
    lb.show_stat(show_stat(0, "DOWN 1/2"), poll=2)
    lb.show_stat(show_stat(0, "UP"))
    result = lb.run(enable_server(SOCKET, "web", "web1", 5, poll_s=0.05))
    assert result.returncode == 0, result.stderr
    assert 0 <= waited_ms(result.stdout) < 5000
    assert lb.polls == 3
    assert lb.requests == ["set server web/web1 state ready"] + ["show stat"] * 3


def test_enable_times_out_naming_the_last_status(lb):
    lb.show_stat(show_stat(0, "DOWN"))
    result = lb.run(enable_server(SOCKET, "web", "web1", 0.3, poll_s=0.05))
    assert result.returncode == TIMED_OUT
    assert result.stderr == "timed out after 0.3s: status DOWN\n"
    assert waited_ms(result.stdout) >= 300


def test_enable_that_cannot_set_ready_fails_without_waiting(lb):
    # The `&&` after `set ... ready` must guard the whole wait, as in drain_server.
    lb.refuse_commands()
    lb.show_stat(show_stat(0, "DOWN"))
    result = lb.run(enable_server(SOCKET, "web", "web1", 5, poll_s=0.05))
    assert result.returncode == 1
    assert "waited_ms" not in result.stdout
    assert lb.requests == ["set server web/web1 state ready"]


def test_show_servers_lists_only_the_servers_of_the_backend(lb):
    lb.show_stat(show_stat(2, "UP 1/2"))
    result = lb.run(show_servers(SOCKET, "web"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "web1 UP 1/2 2\nweb2 UP 4\n"
    assert parse_show_servers(result.stdout) == {"web1": ("UP 1/2", 2), "web2": ("UP", 4)}


def test_drain_of_a_server_haproxy_does_not_know_fails_at_once_with_its_answer(lb):
    # socat exits 0 whatever HAProxy answers; the script must read the answer.
    lb.forget_servers()
    lb.show_stat(show_stat(0, "UP"))
    result = lb.run(drain_server(SOCKET, "web", "web9", 5, poll_s=0.05))
    assert result.returncode == 5
    assert "haproxy refused: No such server." in result.stderr
    assert "waited_ms" not in result.stdout


def test_enable_of_a_server_haproxy_does_not_know_fails_at_once(lb):
    lb.forget_servers()
    lb.show_stat(show_stat(0, "UP"))
    result = lb.run(enable_server(SOCKET, "web", "web9", 5, poll_s=0.05))
    assert (result.returncode, result.stderr.strip()) == (5, "haproxy refused: No such server.")


def counters_row(server: str, responses_2xx: int, responses_5xx: int, retries: int) -> str:
    fields = ["web", server] + ["0"] * 43
    fields[15] = str(retries)  # wretr
    fields[17] = "UP"
    fields[40] = str(responses_2xx)  # hrsp_2xx
    fields[43] = str(responses_5xx)  # hrsp_5xx
    return ",".join(fields)


def test_observe_server_exact_command():
    from deploykit.commands.haproxy import observe_server

    counters = (
        f"{SHOW_STAT} | awk -F, -v b=web -v s=web1"
        " '$1 == b && $2 == s { print $40 + $41 + $42 + $43 + $44 + $45, $44, $16 }'"
    )
    assert observe_server(SOCKET, "web", "web1", 5) == (
        f"before=$({counters}); start=$(date +%s%N); sleep 5; after=$({counters}); "
        "set -- $before $after; "
        'echo "responses=$(($4 - $1)) errors=$(($5 - $2)) retries=$(($6 - $3))"; '
        "echo waited_ms=$((($(date +%s%N) - start) / 1000000))"
    )


def test_observe_server_reports_what_the_server_answered_during_the_window(lb):
    from deploykit.commands.haproxy import observe_server, parse_observation

    lb.show_stat(
        "\n".join([HEADER, counters_row("web2", 900, 9, 0), counters_row("web1", 100, 2, 1)]),
        poll=1,
    )
    lb.show_stat(
        "\n".join([HEADER, counters_row("web2", 990, 90, 0), counters_row("web1", 250, 40, 30)]),
        poll=2,
    )
    result = lb.run(observe_server(SOCKET, "web", "web1", 0.2))
    assert result.returncode == 0, result.stderr
    # web1: (250 + 40) - (100 + 2) responses, 38 of them 5xx, 29 retried elsewhere.
    assert parse_observation(result.stdout) == (188, 38, 29)
    assert "waited_ms=" in result.stdout
