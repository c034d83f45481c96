"""HAProxy runtime API command lines: the exact strings sent to a load balancer, then the
scripts run for real with `sh -c` (dash, as pyinfra runs them on Debian) against a fake
`socat` that answers `show stat` from canned CSV and records every request it gets."""

from __future__ import annotations

import subprocess

import pytest

from deploykit.commands.haproxy import (
    NOT_HELD,
    change_server_state,
    drain_server,
    enable_server,
    force_server_up,
    parse_show_servers,
    runtime_api,
    set_server_state,
    show_servers,
)
from deploykit.commands.shell import TIMED_OUT
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


def test_change_server_state_resends_until_the_serving_worker_holds_it():
    assert change_server_state(SOCKET, "web", "web1", "drain") == (
        "( start=$(date +%s%N); deadline=$((start + 20000 * 1000000)); seen=none; while :; do"
        " if [ ! -e /run/deploykit-haproxy-reloading ] && answer=$(echo 'set server web/web1"
        " state drain' | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock 2>/dev/null);"
        ' then [ -z "$answer" ] || { echo "haproxy refused: $answer" >&2; exit 5; };'
        " seen=$(echo 'show info; show servers state web'"
        " | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock 2>/dev/null"
        ' | awk -v s=web1 \'$1 == "Pid:" { pid = $2 } $4 == s && $7 ~ /^[0-9]+$/'
        " { value = $7 } END { print pid, value }');"
        ' newest=$(pgrep -n -P "$(systemctl show --property MainPID --value haproxy.service)");'
        " set -- $seen; if [ ! -e /run/deploykit-haproxy-reloading ] && [ $# = 2 ]"
        ' && [ "$1" = "$newest" ] && [ $(($2 & 9)) = 8 ]; then break; fi; fi;'
        ' if [ "$(date +%s%N)" -ge "$deadline" ]; then'
        " echo 'web/web1 state drain'\" did not hold within 20s: HAProxy reloading or not"
        ' answering (worker, admin state: $seen; newest worker: ${newest:-none})" >&2;'
        " exit 6; fi; sleep 0.1; done )"
    )


@pytest.mark.parametrize("state, admin_state", [("ready", 0), ("drain", 8), ("maint", 1)])
def test_change_server_state_compares_the_forced_admin_bits(state, admin_state):
    # FMAINT 0x01 and FDRAIN 0x08: what `set server ... state` sets (HAProxy's server.h).
    assert f"[ $(($2 & 9)) = {admin_state} ]" in change_server_state(SOCKET, "web", "w", state)


def test_change_server_state_rejects_an_unknown_state():
    with pytest.raises(ValueError, match="'up'"):
        change_server_state(SOCKET, "web", "web1", "up")


def test_drain_server_drains_polls_scur_then_sets_maint_whatever_happened():
    drain = change_server_state(SOCKET, "web", "web1", "drain")
    maint = change_server_state(SOCKET, "web", "web1", "maint")
    assert drain_server(SOCKET, "web", "web1", 30) == (
        f"{drain} || exit $?;"
        " ( start=$(date +%s%N); deadline=$((start + 30000 * 1000000));"
        f" while :; do scur=$({SHOW_STAT}"
        " | awk -F, -v b=web -v s=web1 '$1 == b && $2 == s { print $5 }');"
        ' if [ "$scur" = 0 ]; then'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 0; fi;"
        ' if [ "$(date +%s%N)" -ge "$deadline" ]; then'
        ' echo "timed out after 30s: $scur sessions left" >&2;'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 3; fi;"
        f" sleep 0.1; done ); status=$?; {maint} || exit $?; exit $status"
    )


def test_drain_server_formats_a_fractional_timeout_and_poll():
    command = drain_server(SOCKET, "web", "web1", 0.3, poll_s=0.05)
    assert "deadline=$((start + 300 * 1000000))" in command
    assert 'echo "timed out after 0.3s: $scur sessions left" >&2' in command
    assert "sleep 0.05; done" in command


def test_drain_server_quotes_backend_and_server_in_awk():
    command = drain_server(SOCKET, "my web", "web 1", 30)
    assert "awk -F, -v b='my web' -v s='web 1' '$1 == b && $2 == s { print $5 }'" in command
    assert "answer=$(echo 'set server my web/web 1 state drain' | socat" in command
    assert "awk -v s='web 1' '$1 == " in command


def test_enable_server_sets_ready_then_waits_for_up():
    ready = change_server_state(SOCKET, "web", "web1", "ready")
    assert enable_server(SOCKET, "web", "web1", 30) == (
        f"{ready} || exit $?;"
        " ( start=$(date +%s%N); deadline=$((start + 30000 * 1000000));"
        f" while :; do status=$({SHOW_STAT}"
        " | awk -F, -v b=web -v s=web1 '$1 == b && $2 == s { print $18 }');"
        ' if [ "$status" = UP ]; then'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 0; fi;"
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
count() { n=$(( $(cat "$STUB_DIR/$1" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$STUB_DIR/$1"; }
if [ -f "$STUB_DIR/refuse" ]; then echo "socat: connect(): Permission denied" >&2; exit 1; fi
case "$request" in
"show stat"|"show info; show stat")
    count polls
    if [ "$request" != "show stat" ]; then
        pid=$(cat "$STUB_DIR/pid.$n" 2>/dev/null || echo 4242)
        printf 'Name: HAProxy\nVersion: 2.6.12\nPid: %s\nUptime_sec: 9\n\n' "$pid"
    fi
    if [ -f "$STUB_DIR/stat.$n" ]; then cat "$STUB_DIR/stat.$n"; else cat "$STUB_DIR/stat"; fi ;;
"show info; show servers state web")
    count reads
    answering=$(cat "$STUB_DIR/answering.$n" 2>/dev/null || cat "$STUB_DIR/answering")
    printf 'Name: HAProxy\nPid: %s\n\n1\n' "$answering"
    echo "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight"
    echo "3 web 1 web1 10.0.0.1 $(cat "$STUB_DIR/op") $(cat "$STUB_DIR/admin") 1"
    echo "3 web 2 web2 10.0.0.2 2 0 1"
    echo ;;
"set server "*)
    count sets
    if [ -f "$STUB_DIR/unknown" ]; then echo "No such server."; echo; exit 0; fi
    # A set that reaches an old worker during a reload is lost: the admin state stays.
    if [ ! -f "$STUB_DIR/lose.$n" ]; then
        case "$request" in
        *"health up") echo 2 > "$STUB_DIR/op" ;;
        *) case "$request" in
        *ready) echo $(( $(cat "$STUB_DIR/admin") & ~9 )) ;;
        *drain) echo $(( ($(cat "$STUB_DIR/admin") & ~9) | 8 )) ;;
        *maint) echo $(( ($(cat "$STUB_DIR/admin") & ~9) | 1 )) ;;
        esac > "$STUB_DIR/admin.new" && mv "$STUB_DIR/admin.new" "$STUB_DIR/admin" ;;
        esac
    fi
    # A reload that saves the states right after this set marks itself.
    if [ -f "$STUB_DIR/mark.$n" ]; then touch "$STUB_DIR/reloading"; fi
    echo ;;
esac
"""
# The script's pauses: a reload ends during the Nth one if "unmark.N" says so.
FAKE_SLEEP = r"""#!/bin/sh
n=$(( $(cat "$STUB_DIR/sleeps" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$STUB_DIR/sleeps"
if [ -f "$STUB_DIR/unmark.$n" ]; then rm -f "$STUB_DIR/reloading"; fi
exec /bin/sleep "$@"
"""
# The newest worker of the master systemd names.
FAKE_PGREP = '#!/bin/sh\n[ "$*" = "-n -P 4000" ] && cat "$STUB_DIR/newest"\n'
FAKE_SYSTEMCTL = (
    '#!/bin/sh\n[ "$*" = "show --property MainPID --value haproxy.service" ] && echo 4000\n'
)

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
    """A fake load balancer: `socat` on PATH, canned `show stat`, recorded requests; one
    worker (pid 4001) serving, web1 ready."""
    bin_dir = install_stubs(
        tmp_path,
        {
            "socat": FAKE_SOCAT,
            "pgrep": FAKE_PGREP,
            "systemctl": FAKE_SYSTEMCTL,
            "sleep": FAKE_SLEEP,
        },
    )
    (tmp_path / "answering").write_text("4001\n")
    (tmp_path / "newest").write_text("4001\n")
    (tmp_path / "admin").write_text("0\n")
    (tmp_path / "op").write_text("2\n")
    marker = str(tmp_path / "reloading")

    class FakeLB:
        reload_marker = marker
        stub_dir = tmp_path

        def change(self, state: str, server: str = "web1", timeout_s: float = 5):
            return self.run(
                change_server_state(
                    SOCKET, "web", server, state, timeout_s, poll_s=0.05, reload_marker=marker
                )
            )

        def worker_answering(self, pid: int, read: int | None = None):
            name = "answering" if read is None else f"answering.{read}"
            (tmp_path / name).write_text(f"{pid}\n")

        def newest_worker(self, pid: int):
            (tmp_path / "newest").write_text(f"{pid}\n")

        def lose_set(self, number: int):
            (tmp_path / f"lose.{number}").write_text("")

        def reload_marks_after_set(self, number: int):
            (tmp_path / f"mark.{number}").write_text("")

        def mark_reload(self):
            (tmp_path / "reloading").write_text("4001\n")

        def reload_ends_at_pause(self, number: int):
            (tmp_path / f"unmark.{number}").write_text("")

        @property
        def admin_state(self) -> int:
            return int((tmp_path / "admin").read_text())

        def show_stat(self, text: str, poll: int | None = None):
            (tmp_path / ("stat" if poll is None else f"stat.{poll}")).write_text(text)

        def worker_pid(self, pid: int, poll: int):
            """The pid `show info` gives at that poll (a reload starts a new worker)."""
            (tmp_path / f"pid.{poll}").write_text(str(pid))

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


READ = "show info; show servers state web"


def drain(lb, server="web1", timeout_s=5.0, change_timeout_s=5.0):
    return lb.run(
        drain_server(
            SOCKET,
            "web",
            server,
            timeout_s,
            poll_s=0.05,
            change_timeout_s=change_timeout_s,
            reload_marker=lb.reload_marker,
        )
    )


def enable(lb, server="web1", timeout_s=5.0, change_timeout_s=5.0, force_up=False):
    return lb.run(
        enable_server(
            SOCKET,
            "web",
            server,
            timeout_s,
            poll_s=0.05,
            change_timeout_s=change_timeout_s,
            reload_marker=lb.reload_marker,
            force_up=force_up,
        )
    )


# -- a state change holds on the worker that serves (issue 13, item 7) --------------------


def test_a_change_the_serving_worker_holds_is_sent_and_read_back_once(lb):
    result = lb.change("drain")
    assert (result.returncode, result.stderr) == (0, "")
    assert lb.requests == ["set server web/web1 state drain", READ]
    assert lb.admin_state == 8


def test_a_change_lost_to_a_reload_is_sent_again_until_it_holds(lb):
    lb.lose_set(1)
    lb.lose_set(2)
    result = lb.change("drain")
    assert (result.returncode, result.stderr) == (0, "")
    assert lb.requests == ["set server web/web1 state drain", READ] * 3
    assert lb.admin_state == 8


def test_a_change_read_back_from_an_old_worker_does_not_count(lb):
    # The first answer comes from the worker a reload is replacing (4001), while the
    # master's newest worker is 4002: the change is sent again until 4002 answers.
    lb.newest_worker(4002)
    lb.worker_answering(4001, read=1)
    lb.worker_answering(4002)
    result = lb.change("maint")
    assert (result.returncode, result.stderr) == (0, "")
    assert lb.requests == ["set server web/web1 state maint", READ] * 2
    assert lb.admin_state == 1


def test_no_change_is_sent_while_a_reload_is_marked(lb):
    lb.mark_reload()
    result = lb.change("drain", timeout_s=0.3)
    assert result.returncode == NOT_HELD == 6
    assert result.stderr == (
        "web/web1 state drain did not hold within 0.3s: HAProxy reloading or not answering"
        " (worker, admin state: none; newest worker: none)\n"
    )
    assert lb.requests == []
    assert lb.admin_state == 0


def test_a_change_followed_by_a_reload_mark_is_sent_again_once_the_reload_is_done(lb):
    # The reload saved the states just after the set (so the new worker may load them
    # without it): the read-back does not count while marked, and the change goes again.
    (lb.stub_dir / "admin").write_text("8\n")  # drained
    lb.reload_marks_after_set(1)
    lb.lose_set(1)
    lb.lose_set(2)
    lb.reload_ends_at_pause(3)
    result = lb.change("ready")
    assert (result.returncode, result.stderr) == (0, "")
    assert lb.requests == ["set server web/web1 state ready", READ] * 3
    assert lb.admin_state == 0


def test_a_change_ignores_admin_bits_it_does_not_set(lb):
    (lb.stub_dir / "admin").write_text("2\n")  # IMAINT: inherited from a tracked server
    result = lb.change("drain")
    assert result.returncode == 0, result.stderr
    assert lb.admin_state == 10


def test_a_change_nothing_answers_fails_after_its_deadline_naming_what_it_saw(lb):
    lb.refuse_commands()
    result = lb.change("ready", timeout_s=0.3)
    assert result.returncode == NOT_HELD
    assert "web/web1 state ready did not hold within 0.3s" in result.stderr


def test_a_change_that_never_holds_says_what_the_serving_worker_reported(lb):
    lb.newest_worker(4002)  # a worker that never answers
    result = lb.change("drain", timeout_s=0.3)
    assert result.returncode == NOT_HELD
    assert "(worker, admin state: 4001 8; newest worker: 4002)" in result.stderr


# -- drain and enable ---------------------------------------------------------------------


def test_drain_exits_0_and_reports_its_wait_when_no_session_is_left(lb):
    lb.show_stat(show_stat(0, "DRAIN"))
    result = drain(lb)
    assert result.returncode == 0, result.stderr
    assert 0 <= waited_ms(result.stdout) < 5000
    assert result.stderr == ""
    assert lb.requests == [
        "set server web/web1 state drain",
        READ,
        "show stat",
        "set server web/web1 state maint",
        READ,
    ]
    assert lb.admin_state == 1


def test_drain_polls_until_the_sessions_are_gone(lb):
    lb.show_stat(show_stat(3, "DRAIN"), poll=1)
    lb.show_stat(show_stat(1, "DRAIN"), poll=2)
    lb.show_stat(show_stat(0, "DRAIN"))
    result = drain(lb)
    assert result.returncode == 0, result.stderr
    assert lb.polls == 3
    assert lb.requests[-2:] == ["set server web/web1 state maint", READ]


def test_drain_times_out_with_sessions_left_and_still_sets_maint(lb):
    lb.show_stat(show_stat(5, "DRAIN"))
    result = drain(lb, timeout_s=0.3)
    assert result.returncode == TIMED_OUT == 3
    assert result.stderr == "timed out after 0.3s: 5 sessions left\n"
    assert waited_ms(result.stdout) >= 300
    assert lb.polls >= 2
    assert lb.requests[0] == "set server web/web1 state drain"
    assert lb.requests[-2:] == ["set server web/web1 state maint", READ]
    assert lb.admin_state == 1


def test_drain_whose_maint_does_not_hold_fails_with_not_held(lb):
    lb.show_stat(show_stat(0, "DRAIN"))
    for number in range(2, 200):
        lb.lose_set(number)  # every set after the drain is lost
    result = drain(lb, change_timeout_s=0.3)
    assert result.returncode == NOT_HELD
    assert "web/web1 state maint did not hold within 0.3s" in result.stderr


def test_drain_that_cannot_reach_the_socket_fails_without_waiting_for_sessions(lb):
    lb.refuse_commands()
    lb.show_stat(show_stat(0, "UP"))
    result = drain(lb, change_timeout_s=0.3)
    assert result.returncode == NOT_HELD
    assert "waited_ms" not in result.stdout
    assert "show stat" not in lb.requests


def test_enable_exits_0_once_the_server_is_up(lb):
    lb.show_stat(show_stat(0, "MAINT"), poll=1)
    lb.show_stat(show_stat(0, "DOWN 1/2"), poll=2)
    lb.show_stat(show_stat(0, "UP"))
    result = enable(lb)
    assert result.returncode == 0, result.stderr
    assert 0 <= waited_ms(result.stdout) < 5000
    assert lb.polls == 3
    assert lb.requests == ["set server web/web1 state ready", READ] + ["show stat"] * 3


def test_force_server_up_resends_until_the_serving_worker_has_it_running():
    assert force_server_up(SOCKET, "web", "web1") == (
        "( start=$(date +%s%N); deadline=$((start + 20000 * 1000000)); seen=none; while :; do"
        " if [ ! -e /run/deploykit-haproxy-reloading ] && answer=$(echo 'set server web/web1"
        " health up' | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock 2>/dev/null);"
        ' then [ -z "$answer" ] || { echo "haproxy refused: $answer" >&2; exit 5; };'
        " seen=$(echo 'show info; show servers state web'"
        " | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock 2>/dev/null"
        ' | awk -v s=web1 \'$1 == "Pid:" { pid = $2 } $4 == s && $6 ~ /^[0-9]+$/'
        " { value = $6 } END { print pid, value }');"
        ' newest=$(pgrep -n -P "$(systemctl show --property MainPID --value haproxy.service)");'
        " set -- $seen; if [ ! -e /run/deploykit-haproxy-reloading ] && [ $# = 2 ]"
        ' && [ "$1" = "$newest" ] && [ "$2" = 2 ]; then break; fi; fi;'
        ' if [ "$(date +%s%N)" -ge "$deadline" ]; then'
        " echo 'web/web1 health up'\" did not hold within 20s: HAProxy reloading or not"
        ' answering (worker, operational state: $seen; newest worker: ${newest:-none})" >&2;'
        " exit 6; fi; sleep 0.1; done )"
    )


def test_enable_forcing_up_sets_ready_then_health_up_and_finds_the_server_up_at_once(lb):
    # Leaving maintenance, the server is "UP 1/3" until HAProxy's next check, up to
    # `inter` later; told healthy, it is UP at the first look.
    (lb.stub_dir / "op").write_text("0\n")
    lb.show_stat(show_stat(0, "UP"))
    result = enable(lb, force_up=True)
    assert result.returncode == 0, result.stderr
    assert lb.requests == [
        "set server web/web1 state ready",
        READ,
        "set server web/web1 health up",
        READ,
        "show stat",
    ]


def test_a_health_up_lost_to_a_reload_is_sent_again_until_the_server_runs(lb):
    (lb.stub_dir / "op").write_text("0\n")
    lb.lose_set(2)
    lb.show_stat(show_stat(0, "UP"))
    result = enable(lb, force_up=True)
    assert result.returncode == 0, result.stderr
    assert lb.requests[2:6] == ["set server web/web1 health up", READ] * 2
    assert (lb.stub_dir / "op").read_text().strip() == "2"


def test_a_health_up_that_never_holds_fails_before_waiting_for_up(lb):
    (lb.stub_dir / "op").write_text("0\n")
    for number in range(2, 40):
        lb.lose_set(number)
    lb.show_stat(show_stat(0, "UP"))
    result = enable(lb, change_timeout_s=0.3, force_up=True)
    assert result.returncode == NOT_HELD
    assert result.stderr == (
        "web/web1 health up did not hold within 0.3s: HAProxy reloading or not answering"
        " (worker, operational state: 4001 0; newest worker: 4001)\n"
    )
    assert "show stat" not in lb.requests


def test_enable_times_out_naming_the_last_status(lb):
    lb.show_stat(show_stat(0, "DOWN"))
    result = enable(lb, timeout_s=0.3)
    assert result.returncode == TIMED_OUT
    assert result.stderr == "timed out after 0.3s: status DOWN\n"
    assert waited_ms(result.stdout) >= 300


def test_enable_that_cannot_set_ready_fails_without_waiting(lb):
    lb.refuse_commands()
    lb.show_stat(show_stat(0, "DOWN"))
    result = enable(lb, change_timeout_s=0.3)
    assert result.returncode == NOT_HELD
    assert "waited_ms" not in result.stdout
    assert "show stat" not in lb.requests


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
    result = drain(lb, server="web9")
    assert result.returncode == 5
    assert "haproxy refused: No such server." in result.stderr
    assert "waited_ms" not in result.stdout


def test_enable_of_a_server_haproxy_does_not_know_fails_at_once(lb):
    lb.forget_servers()
    lb.show_stat(show_stat(0, "UP"))
    result = enable(lb, server="web9")
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
        "echo 'show info; show stat' | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock"
        " | awk -F, -v b=web -v s=web1 '/^Pid: / { pid = substr($0, 6) }"
        ' $1 == b && $2 == s { row = ($40 + $41 + $42 + $43 + $44 + $45) "," $44 "," $16 }'
        ' END { print pid "," row }\''
    )
    assert observe_server(SOCKET, "web", "web1", 5) == (
        f"before=$({counters}); start=$(date +%s%N); sleep 5; after=$({counters}); "
        'echo "before=$before after=$after"; '
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


def test_observe_server_prints_each_read_with_the_worker_that_answered_it(lb):
    from deploykit.commands.haproxy import observe_server

    lb.show_stat("\n".join([HEADER, counters_row("web1", 100, 2, 1)]), poll=1)
    lb.show_stat("\n".join([HEADER, counters_row("web1", 250, 40, 30)]), poll=2)
    lb.worker_pid(77, poll=2)
    result = lb.run(observe_server(SOCKET, "web", "web1", 0.1))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "before=4242,102,2,1 after=77,290,40,30"


def test_observe_server_with_an_empty_second_read_prints_it_empty(lb):
    from deploykit.commands.haproxy import observe_server

    lb.show_stat("\n".join([HEADER, counters_row("web1", 100, 2, 1)]), poll=1)
    lb.show_stat("", poll=2)
    lb.worker_pid(4242, poll=2)
    result = lb.run(observe_server(SOCKET, "web", "web1", 0.1))
    assert result.stdout.splitlines()[0] == "before=4242,102,2,1 after=4242,"


@pytest.mark.parametrize(
    "output, reason",
    [
        # The second read found nothing (socket busy, server gone): it was accepted as
        # 0 - 102 responses before.
        ("before=4242,102,2,1 after=4242,", "the read after the window is unusable ('4242,')"),
        ("before= after=", "the read before the window is unusable ('')"),
        ("", "the read before the window is unusable ('')"),
        ("before=4242,102,2,1 after=4243,5,0,0", "HAProxy reloaded during the window"),
        ("before=4242,102,2,1 after=4242,5,0,0", "counters went back during the window"),
        ("before=4242,0,0,0 after=4242,10,20,0", "more 5xx (20) than responses (10)"),
    ],
)
def test_parse_observation_fails_closed_on_reads_it_cannot_trust(output, reason):
    from deploykit.commands.haproxy import CountersUntrusted, parse_observation

    with pytest.raises(CountersUntrusted) as error:
        parse_observation(output + "\nwaited_ms=5000")
    assert reason in str(error.value)


def test_parse_observation_counts_what_happened_in_the_window():
    from deploykit.commands.haproxy import parse_observation

    output = "before=4242,102,2,1 after=4242,290,40,30\nwaited_ms=5001"
    assert parse_observation(output) == (188, 38, 29)


# -- never drain the last server UP ---------------------------------------------------------


def test_wait_for_another_server_exact_command():
    from deploykit.commands.haproxy import wait_for_another_server

    awk = (
        '$1 == b && $2 != "BACKEND" && $2 != "FRONTEND" && $2 != s { '
        'if (index(out, " " $2 " ")) { down = down sep $2 " (being swapped)"; sep = ", "; next } '
        'if ($18 ~ /^(UP|no check)/) other = 1; else { down = down sep $2 " " $18; sep = ", " } } '
        'END { if (other) print "ok"; else print (down == "" ? "no other server" : down) }'
    )
    assert wait_for_another_server(SOCKET, "web", "web1", ["web2", "web3"], 30) == (
        "start=$(date +%s%N); deadline=$((start + 30000 * 1000000)); while :; do "
        f"seen=$({SHOW_STAT} | awk -F, -v b=web -v s=web1 -v out=' web2 web3 ' '{awk}'); "
        'if [ "$seen" = ok ]; then echo waited_ms=$((($(date +%s%N) - start) / 1000000)); '
        'exit 0; fi; if [ "$(date +%s%N)" -ge "$deadline" ]; then '
        'echo "no other server of backend web is UP here after 30s: $seen" >&2; '
        "echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 7; "
        "echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 3; fi; sleep 0.5; done"
    )


def backend(**statuses: str) -> str:
    rows = [stat_row("http", "FRONTEND", 0, "OPEN")]
    rows += [stat_row("web", name, 0, status) for name, status in statuses.items()]
    rows += [stat_row("web", "BACKEND", 0, "UP"), stat_row("static", "web2", 0, "UP")]
    return "\n".join([HEADER, *rows]) + "\n"


@pytest.mark.parametrize(
    "statuses, also_out",
    [
        ({"web1": "UP", "web2": "UP", "web3": "MAINT"}, []),
        ({"web1": "UP", "web2": "UP 1/3", "web3": "MAINT"}, []),  # failing, still serving
        ({"web1": "UP", "web2": "no check"}, []),
        ({"web1": "UP", "web2": "UP", "web3": "UP"}, ["web2"]),
        ({"web1": "DOWN", "web2": "UP"}, []),
    ],
)
def test_wait_for_another_server_passes_at_once_when_draining_leaves_a_server_up(
    lb, statuses, also_out
):
    from deploykit.commands.haproxy import wait_for_another_server

    lb.show_stat(backend(**statuses))
    result = lb.run(wait_for_another_server(SOCKET, "web", "web1", also_out, 5, poll_s=0.05))
    assert (result.returncode, result.stderr) == (0, "")
    assert lb.polls == 1


@pytest.mark.parametrize(
    "statuses, also_out, down",
    [
        ({"web1": "UP", "web2": "MAINT", "web3": "DOWN"}, [], "web2 MAINT, web3 DOWN"),
        ({"web1": "UP", "web2": "DRAIN"}, [], "web2 DRAIN"),
        ({"web1": "UP", "web2": "UP", "web3": "DOWN"}, ["web2"], "web2 (being swapped), web3 DOWN"),
        ({"web1": "UP"}, [], "no other server"),
        # web1 flapping DOWN under load is still the last server that may serve.
        ({"web1": "DOWN", "web2": "MAINT"}, [], "web2 MAINT"),
    ],
)
def test_wait_for_another_server_refuses_after_its_wait_naming_the_servers_down(
    lb, statuses, also_out, down
):
    from deploykit.commands.haproxy import LAST_SERVER, wait_for_another_server

    lb.show_stat(backend(**statuses))
    result = lb.run(wait_for_another_server(SOCKET, "web", "web1", also_out, 0.3, poll_s=0.05))
    assert result.returncode == LAST_SERVER
    assert result.stderr == f"no other server of backend web is UP here after 0.3s: {down}\n"
    assert waited_ms(result.stdout) >= 300  # it waited before refusing


def test_wait_for_another_server_waits_until_another_comes_up(lb):
    from deploykit.commands.haproxy import wait_for_another_server

    lb.show_stat(backend(web1="UP", web2="DOWN"), poll=1)
    lb.show_stat(backend(web1="UP", web2="DOWN 1/2"), poll=2)
    lb.show_stat(backend(web1="UP", web2="UP"))
    result = lb.run(wait_for_another_server(SOCKET, "web", "web1", [], 5, poll_s=0.05))
    assert result.returncode == 0, result.stderr
    assert lb.polls == 3
