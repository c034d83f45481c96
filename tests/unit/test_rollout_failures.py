"""A roll's failure paths, replayed against the fake fleet (tests/unit/fake_fleet.py):
an error of any kind at any command puts the host back in rotation on its old release
before it goes up; the siblings of a batch are never left running unsupervised; a
restore is read back, not assumed; the last server UP is never drained; every command
carries a time limit; the canary gate fails closed."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from dataclasses import replace
from types import SimpleNamespace

import gevent
import pytest

from deploykit.commands.shell import time_limit
from deploykit.rollout import run as run_module
from deploykit.rollout.engine import RolloutFailed, StepFailed
from deploykit.rollout.pyinfra_fleet import PyinfraFleet, supervise
from deploykit.rollout.requests import RollRequest
from deploykit.rollout.web import WebRoll, WebRollSettings
from deploykit.rollout.workers import WorkerRoll, WorkerRollSettings
from tests.unit.fake_fleet import FakeFleet
from tests.unit.fakes import FakeData

SETTINGS = WebRollSettings.from_data(
    FakeData(
        app_image="registry:5000/deploykit/app",
        app_nginx_image="registry:5000/deploykit/nginx:1",
    ),
    "v2",
    run_id="20261126",
)
HOSTS = ["web1", "web2"]
LBS = ["lb1", "lb2"]


def web_fleet(**options) -> FakeFleet:
    return FakeFleet({host: "v1" for host in HOSTS}, **options)


def web1_commands() -> list[str]:
    """The commands of web1's whole roll (canary gate included), in order."""
    fleet = web_fleet()
    WebRoll(fleet, SETTINGS, HOSTS, LBS).run()
    return fleet.events[: fleet.events.index("web1: record and prune") + 1]


WEB1 = web1_commands()
# From here on, the new pair serves and the old one is being retired: web1 stays on v2.
CLEANUP = WEB1.index("web1: stop old app")


def errors():
    return [ValueError("unparsable output"), KeyboardInterrupt(), gevent.Timeout()]


# -- 1. any exception, at any command ------------------------------------------------------


@pytest.mark.parametrize("took_effect", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("error", errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("number", range(len(WEB1)), ids=lambda n: f"{n}-{WEB1[n]}")
def test_an_error_at_any_command_puts_the_host_back_in_rotation_then_goes_up(
    number, error, took_effect
):
    fleet = web_fleet()
    fleet.raise_at = (number, error, took_effect)
    roll = WebRoll(fleet, SETTINGS, HOSTS, LBS)
    with pytest.raises(type(error)) as raised:
        roll.run()
    assert raised.value is error  # the very error, not a wrapper
    assert fleet.events[number] == WEB1[number]
    # Whatever happened, no server is left out of rotation on any LB...
    assert fleet.out_of_rotation() == {}
    # ...web1 serves: its old release, unless the new one was already in for good...
    assert fleet.serving_tag("web1") == ("v1" if number < CLEANUP else "v2")
    if number < CLEANUP:
        assert {c.tag for c in fleet.containers["web1"]} == {"v1"}
    # ...and the roll went no further.
    assert not any(event.startswith("web2") for event in fleet.events)
    if 0 < number < CLEANUP:
        assert roll.reports[0].result.startswith(f"failed: {type(error).__name__}")


def test_siblings_of_a_batch_go_back_too_before_the_error_goes_up():
    hosts = ["web1", "web2", "web3"]
    fleet = FakeFleet({host: "v1" for host in hosts}, concurrent=True)
    error = ValueError("unparsable output")
    calls = {"n": 0}
    original_run = fleet.run

    def run(host, command, sudo=False, limit_s=None):
        # web2's health check raises while web3, in the same batch, is mid-swap.
        if host == "web2" and fleet.classify(command)[0] == "check app":
            fleet.events.append("web2: check app")
            raise error
        calls["n"] += 1
        return original_run(host, command, sudo, limit_s)

    fleet.run = run
    roll = WebRoll(fleet, replace(SETTINGS, batch_size=2), hosts, LBS)
    with pytest.raises(ValueError) as raised:
        roll.run()
    assert raised.value is error
    done = calls["n"]
    gevent.sleep(0.05)
    assert calls["n"] == done  # nothing ran on after the error went up
    assert fleet.serving_tag("web1") == "v2"
    assert (fleet.serving_tag("web2"), fleet.serving_tag("web3")) == ("v1", "v1")
    assert fleet.out_of_rotation() == {}
    results = {r.host: r.result for r in roll.reports}
    assert results["web2"].startswith("failed: ValueError: unparsable output")
    assert "stopped before" in results["web3"] and "web2 failed with ValueError" in results["web3"]


def test_a_second_interrupt_puts_the_host_in_progress_back_at_its_next_step():
    fleet = web_fleet()
    roll = WebRoll(fleet, SETTINGS, HOSTS, LBS)
    original_run = fleet.run

    def run(host, command, sudo=False, limit_s=None):
        if host == "web1" and fleet.classify(command)[0] == "check app":
            roll.stop_requested = True
            roll.stop_now = "interrupted twice (SIGINT, SIGTERM)"
        return original_run(host, command, sudo, limit_s)

    fleet.run = run
    with pytest.raises(RolloutFailed) as failure:
        roll.run()
    assert failure.value.host == "web1"
    assert failure.value.reason == ("stopped before readmit: interrupted twice (SIGINT, SIGTERM)")
    assert fleet.serving_tag("web1") == "v1"
    assert fleet.out_of_rotation() == {}
    assert not any(event.startswith("web2") for event in fleet.events)


def test_the_runner_waits_for_every_call_before_raising_the_first_error():
    finished = []

    def fails():
        raise KeyboardInterrupt

    def slow():
        gevent.sleep(0.05)
        finished.append("slow")
        return "done"

    with pytest.raises(KeyboardInterrupt):
        PyinfraFleet(state=None).parallel([fails, slow])
    assert finished == ["slow"]
    assert PyinfraFleet(state=None).parallel([slow, slow]) == ["done", "done"]


class Interrupted(BaseException):
    pass


def test_the_runner_interrupted_itself_still_waits_for_its_calls_then_raises():
    finished = []

    def slow(number):
        gevent.sleep(0.2)
        finished.append(number)

    runner = gevent.spawn(supervise, [lambda: slow(1), lambda: slow(2)])
    gevent.sleep(0.01)
    runner.kill(Interrupted, block=True)
    assert isinstance(runner.exception, Interrupted)
    assert finished == [1, 2]


# -- 2. a restore is read back, not assumed ---------------------------------------------------


def test_a_restore_that_fails_reports_the_hosts_true_state_from_every_lb():
    fleet = web_fleet(fail={("web1", "start nginx"): 125, ("web1", "restart old nginx"): 1})
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, SETTINGS, HOSTS, LBS).run()
    report = failure.value.reports[0]
    assert report.stranded == "lb1: DOWN, lb2: DOWN"
    assert report.result.endswith("; NOT back in service: lb1: DOWN, lb2: DOWN")
    assert "web1: NOT back in service after going back: lb1: DOWN, lb2: DOWN" in fleet.messages


def test_a_restore_that_works_is_confirmed_by_every_lb():
    fleet = web_fleet(fail={("web1", "check app"): 3})
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, SETTINGS, HOSTS, LBS).run()
    assert failure.value.reports[0].stranded == ""
    assert fleet.events[-2:] == ["lb1: show servers", "lb2: show servers"]


def test_a_worker_that_does_not_start_again_is_reported_as_it_is():
    fleet = FakeFleet(
        workers={"job1": [(1, "v1", "v1-20260101", "running")]},
        fail={
            ("job1", "wait ready worker-1-v2-20261127"): 4,
            ("job1", "start again worker-1-v1-20260101"): 1,
        },
    )
    settings = WorkerRollSettings.from_data(
        FakeData(app_image="registry:5000/deploykit/app"), "v2", run_id="20261127"
    )
    with pytest.raises(RolloutFailed) as failure:
        WorkerRoll(fleet, settings, ["job1"]).run()
    assert failure.value.reports[0].stranded == "worker-1-v1-20260101 is exited"


def run_request(fleet, monkeypatch, **settings) -> RollRequest:
    monkeypatch.setattr(run_module, "PyinfraFleet", lambda state: fleet)
    return RollRequest(WebRoll, replace(SETTINGS, **settings), HOSTS, LBS)


def test_the_operator_is_told_a_host_is_not_back_when_it_is_not(monkeypatch, caplog):
    fleet = web_fleet(fail={("web1", "start nginx"): 125, ("web1", "restart old nginx"): 1})
    request = run_request(fleet, monkeypatch)
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        assert run_module.run_roll(None, None, request) is False
    assert "web1 is NOT back in service: lb1: DOWN, lb2: DOWN." in caplog.text
    assert "back on its previous release" not in caplog.text


def test_an_error_that_is_not_a_steps_is_reported_then_raised(monkeypatch, caplog):
    fleet = web_fleet()
    fleet.raise_at = (WEB1.index("web1: start nginx"), ValueError("unparsable"), False)
    request = run_request(fleet, monkeypatch)
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        with pytest.raises(ValueError):
            run_module.run_roll(None, None, request)
    assert "ROLL ABORTED by ValueError: unparsable." in caplog.text
    assert "failed: ValueError: unparsable" in caplog.text  # the summary table


# -- 3. SIGTERM and SIGHUP take Ctrl-C's path -----------------------------------------------


def run_python(script: str) -> subprocess.CompletedProcess:
    """Signals are sent to a child Python: a test must not kill its own runner."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sigterm_and_sighup_stop_a_roll_as_ctrl_c_does():
    result = run_python("""
        import os, signal
        from types import SimpleNamespace
        from deploykit.rollout.pyinfra_fleet import finish_host_on_interrupt
        roll = SimpleNamespace(stop_requested=False, stop_now=None)
        fleet = SimpleNamespace(log=print)
        with finish_host_on_interrupt(roll, fleet, lambda name: print("audit:", name)):
            os.kill(os.getpid(), signal.SIGTERM)
            print("after one:", roll.stop_requested, roll.stop_now)
            os.kill(os.getpid(), signal.SIGHUP)
            print("after two:", roll.stop_requested, roll.stop_now)
            os.kill(os.getpid(), signal.SIGINT)
        print("restored:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("audit:")] == [
        "audit: SIGTERM",
        "audit: SIGHUP",
        "audit: SIGINT",
    ]
    assert "after one: True None" in lines
    assert "after two: True interrupted twice (SIGTERM, SIGHUP)" in lines
    assert "SIGINT: still putting the hosts in progress back; please wait" in lines
    assert lines[-1] == "restored: True"


def test_once_the_lock_is_held_sigterm_and_sighup_go_to_the_ctrl_c_handler():
    result = run_python("""
        import os, signal
        from deploykit.rollout.termination import end_like_ctrl_c
        signal.signal(signal.SIGINT, lambda signum, frame: print("ctrl-c path:", signum))
        end_like_ctrl_c(lambda name: print("recorded:", name))
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        print("still running")
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "recorded: SIGTERM",
        f"ctrl-c path: {int(__import__('signal').SIGTERM)}",
        "recorded: SIGHUP",
        f"ctrl-c path: {int(__import__('signal').SIGHUP)}",
        "still running",
    ]


def test_a_signal_during_the_release_at_exit_does_not_cut_it_short():
    result = run_python("""
        import atexit, os, signal
        from deploykit.rollout.termination import end_like_ctrl_c

        def release():
            os.kill(os.getpid(), signal.SIGTERM)  # a second stop, as the lock goes back
            os.kill(os.getpid(), signal.SIGINT)
            print("released")

        atexit.register(release)
        end_like_ctrl_c(lambda name: print("recorded:", name))
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["released"]


PYINFRA_LIKE_RUN = """
    from gevent import monkey; monkey.patch_all()
    import atexit, os, signal, sys, threading, gevent
    from deploykit.rollout.termination import end_like_ctrl_c

    def pyinfra_ctrl_c(signum, frame):  # pyinfra_cli.main's SIGINT handler
        print("Exiting upon user request!")
        sys.exit(0)

    signal.signal(signal.SIGINT, pyinfra_ctrl_c)
    atexit.register(lambda: print("lock released"))
    end_like_ctrl_c(lambda name: print("recorded:", name))

    def transport():
        # A paramiko transport's green thread is running when the signal arrives:
        # Python runs the handler here, at its next bytecode.
        os.kill(os.getpid(), signal.SIG{name})
        for _ in range(100):
            gevent.sleep(0.01)

    threading.Thread(target=transport).start()
    gevent.sleep(20)  # the main greenlet waits, as pyinfra waits for the hosts' greenlets
    print("the stop was lost")
    """


@pytest.mark.parametrize("name", ["TERM", "HUP", "INT"])
def test_a_stop_signal_handled_in_a_green_thread_still_ends_the_run(name):
    """It used to kill only that thread (threading swallows SystemExit): the run hung
    with the lock held, that host's SSH transport gone."""
    result = run_python(PYINFRA_LIKE_RUN.replace("{name}", name))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "the stop was lost" not in lines
    assert lines[-2:] == ["Exiting upon user request!", "lock released"]
    if name != "INT":
        assert lines[0] == f"recorded: SIG{name}"


# -- 4. never drain the last server UP ----------------------------------------------------------


def test_the_roll_refuses_to_drain_the_last_server_up_naming_the_servers_down():
    fleet = web_fleet(other_servers=("web0",))
    fleet.lb_states[("lb1", "web0")] = "MAINT"
    fleet.lb_states[("lb1", "web2")] = "DOWN"
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, SETTINGS, HOSTS, LBS).run()
    assert failure.value.host == "web1"
    assert failure.value.reason == (
        "refusing to drain web1, the last server UP (lb1: no other server is UP: "
        "web0 MAINT, web2 DOWN); set rollout_drain_last_server = True to drain it anyway"
    )
    assert fleet.lb_state("lb1", "web1") == "UP"  # never drained there
    assert "web1: start app" not in fleet.events
    assert fleet.out_of_rotation() == {("lb1", "web0"): "MAINT", ("lb1", "web2"): "DOWN"}


def test_a_first_deploy_drains_a_host_that_serves_nothing_yet():
    fleet = FakeFleet({"web1": None, "web2": None}, other_servers=())
    fleet.lb_states.update({("lb1", "web1"): "DOWN", ("lb1", "web2"): "DOWN"})
    WebRoll(fleet, SETTINGS, ["web1", "web2"], ["lb1"]).run()
    assert fleet.serving_tag("web1") == fleet.serving_tag("web2") == "v2"
    assert fleet.out_of_rotation() == {}


def test_a_setting_drains_the_last_server_anyway():
    fleet = web_fleet(other_servers=())
    fleet.lb_states[("lb1", "web2")] = "MAINT"
    WebRoll(fleet, replace(SETTINGS, drain_last_server=True), ["web1"], ["lb1"]).run()
    assert fleet.serving_tag("web1") == "v2"


def test_hosts_of_one_batch_do_not_count_each_other_as_the_server_left_up():
    fleet = FakeFleet({"web1": "v1", "web2": "v1", "web3": "v1"}, other_servers=())
    fleet.lb_states[("lb1", "web1")] = "MAINT"  # out, by an operator
    roll = WebRoll(fleet, SETTINGS, ["web1", "web2", "web3"], ["lb1"])
    report = SimpleNamespace(waited_s=0.0)
    roll.drain_everywhere("web2", report)  # web3 is still UP: web2 may go
    commands = []
    original_run = fleet.run
    fleet.run = lambda host, command, **options: (
        commands.append(command) or original_run(host, command, **options)
    )
    with pytest.raises(StepFailed, match="refusing to drain web3, the last server UP"):
        roll.drain_everywhere("web3", report)  # web2 is out: web3 is the last one
    assert "-v out=' web2 '" in commands[0]
    assert fleet.lb_state("lb1", "web3") == "UP"


# -- 5. every command has a time limit, enforced on the host -------------------------------------


def test_every_command_of_a_web_roll_carries_a_time_limit_covering_its_own_wait():
    fleet = web_fleet(fail={("web2", "check pair"): 3})
    with pytest.raises(RolloutFailed):
        WebRoll(fleet, SETTINGS, HOSTS, LBS).run()
    limits = dict(zip(fleet.events, fleet.limits))
    assert None not in fleet.limits
    base = SETTINGS.command_timeout_s
    assert limits["web1: start app"] == base
    assert limits["web1: check app"] == base + SETTINGS.health_timeout_s
    assert limits["lb1: drain"] == base + SETTINGS.drain_timeout_s + SETTINGS.last_server_wait_s
    assert limits["lb1: ready"] == base + SETTINGS.readmit_timeout_s
    assert limits["lb1: observe"] == base + SETTINGS.canary_observe_s
    assert limits["web1: stop old app"] == base + SETTINGS.stop_timeout_s


def test_every_command_of_a_workers_roll_carries_a_time_limit():
    fleet = FakeFleet(workers={"job1": [(1, "v1", "v1-20260101", "running")]})
    settings = WorkerRollSettings.from_data(
        FakeData(app_image="registry:5000/deploykit/app"), "v2", run_id="20261127"
    )
    WorkerRoll(fleet, settings, ["job1"]).run()
    assert fleet.limits and None not in fleet.limits


def test_a_step_killed_at_its_time_limit_puts_the_host_back():
    fleet = web_fleet(fail={("web1", "start nginx"): 124})
    with pytest.raises(RolloutFailed, match="start the new nginx failed: exit 124"):
        WebRoll(fleet, SETTINGS, HOSTS, LBS).run()
    assert fleet.serving_tag("web1") == "v1"
    assert fleet.out_of_rotation() == {}


class FakeConnection:
    name = "web1"
    connected = True

    def run_shell_command(self, command, _sudo, _timeout):
        self.sent = (command.get_raw_value(), _sudo, _timeout)
        return True, SimpleNamespace(stdout="deploykit-exit=0\n", stderr="")


def test_the_real_fleet_runs_a_limited_command_under_timeout_on_the_host():
    connection = FakeConnection()
    state = SimpleNamespace(inventory=SimpleNamespace(get_host=lambda name: connection))
    result = PyinfraFleet(state).run("web1", "docker ps", sudo=True, limit_s=70)
    assert result.ok
    command, sudo, ssh_timeout = connection.sent
    assert command == f"( {time_limit('docker ps', 70)} ); echo deploykit-exit=$?"
    assert (sudo, ssh_timeout) == (True, 100)


def run_limited(command: str, limit_s: float) -> subprocess.CompletedProcess:
    """time_limit's script run with sh, as on a host."""
    script = time_limit(command, limit_s)
    # Reading the output to its end also waits for whatever still holds it open.
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=15)


@pytest.mark.parametrize(
    "command, output",
    [
        ("echo started; sleep 60", "started\n"),
        ("trap '' TERM; sleep 60", ""),
        # As the docker CLI does with a wedged daemon: the client outlives the shell
        # timeout watches, and would hold the SSH channel open.
        ("sh -c \"trap '' TERM; sleep 60\"; echo never", ""),
    ],
    ids=["hung", "ignores SIGTERM", "a child outlives its shell"],
)
def test_a_time_limit_kills_a_hung_command_on_the_host_and_says_so(command, output):
    result = run_limited(command, 1)
    assert (result.returncode, result.stdout) == (124, output)
    assert result.stderr.splitlines()[-1] == "killed: exceeded its time limit of 1s on the host"


def test_a_time_limit_keeps_the_commands_own_status_and_quoting():
    result = run_limited('echo "it\'s" $((1 + 1)); exit 7', 5)
    assert (result.returncode, result.stdout, result.stderr) == (7, "it's 2\n", "")


def test_time_limit_exact_command():
    assert time_limit("docker ps", 70) == (
        "limit_start=$(date +%s); timeout --signal=KILL 70 sh -c 'docker ps'; status=$?; "
        'if [ "$status" -eq 137 ] && [ $(($(date +%s) - limit_start)) -ge 70 ]; then '
        "echo 'killed: exceeded its time limit of 70s on the host' >&2; exit 124; fi; "
        "exit $status"
    )


# -- 6. the canary gate fails closed ---------------------------------------------------------


GATED = replace(SETTINGS, canary_observe_s=5.0)


@pytest.mark.parametrize(
    "observation, why",
    [
        ("before=7,100,0,0 after=7,", "the read after the window is unusable ('7,')"),
        ("before= after=", "the read before the window is unusable ('')"),
        ("before=7,100,0,0 after=8,3,0,0", "HAProxy reloaded during the window"),
        ("before=7,100,0,0 after=7,3,0,0", "counters went back during the window"),
    ],
)
def test_the_canary_gate_sends_the_host_back_when_its_reads_cannot_be_trusted(observation, why):
    fleet = web_fleet()
    fleet.observation["web1"] = observation
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, GATED, HOSTS, LBS).run()
    assert failure.value.host == "web1"
    assert failure.value.reason.startswith("canary gate cannot trust lb1's counters: ")
    assert why in failure.value.reason
    assert fleet.serving_tag("web1") == "v1"
    assert fleet.out_of_rotation() == {}
    assert not any(event.startswith("web2") for event in fleet.events)
