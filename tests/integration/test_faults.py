"""Faults during a roll, each under continuous load through HAProxy (150 requests/s).

Each test asserts: (a) no failed request while a healthy server remained; (b) the deploy
exits non-zero naming the host and the cause; (c) a plain re-run after the fault is
removed converges, every host on the target tag and every server UP; (d) no host is
left drained or in maintenance by the failure (after the re-run, for a killed deploy).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest

from .sandbox_world import (
    LOCK,
    BackgroundPyinfra,
    LoadRun,
    World,
    audit_entries,
    lb_urls,
    copy_sandbox_inventory,
    deploy_args,
    lock_exists,
    other_tag,
    pyinfra,
    wait_for,
)


def assert_converged(fleet: World, tag: str) -> None:
    """(c) and (d): a plain re-run brings every host to the tag, every server UP."""
    run = pyinfra(*deploy_args(tag))
    assert run.returncode == 0, run.failure_excerpt()
    assert {name: fleet.running_tag(name) for name in fleet.hosts("web")} == {
        name: tag for name in fleet.hosts("web")
    }
    assert set(fleet.server_states().values()) == {"UP"}, fleet.server_states()


def in_maintenance(fleet: World, server: str):
    return lambda: fleet.server_states().get(server) == "MAINT"


@pytest.fixture
def healthy_fleet(on_v1):
    """Every test starts from a healthy fleet, all servers UP, whatever came before."""
    for name in on_v1.hosts():
        if on_v1.container(name).status != "running":
            on_v1.container(name).start()
            on_v1.wait_for_ssh(name)
    wait_for(lambda: set(on_v1.server_states().values()) == {"UP"}, what="all servers UP")
    return on_v1


def test_web_host_dies_while_it_is_swapped(healthy_fleet):
    fleet = healthy_fleet
    target = other_tag(fleet)
    with LoadRun(lb_urls()) as load:
        roll = BackgroundPyinfra(*deploy_args(target))
        wait_for(in_maintenance(fleet, "web2"), what="web2 drained")
        fleet.container("web2").stop(timeout=2)
        run = roll.wait()
    assert run.returncode != 0
    assert "ROLL STOPPED at web2" in run.output
    load.assert_no_failed_request()
    assert fleet.server_states()["web2"] != "MAINT"  # (d) not left in maintenance
    fleet.container("web2").start()
    fleet.wait_for_ssh("web2")
    assert_converged(fleet, target)


def test_web_host_dies_while_another_is_swapped(healthy_fleet):
    fleet = healthy_fleet
    target = other_tag(fleet)
    with LoadRun(lb_urls()) as load:
        roll = BackgroundPyinfra(*deploy_args(target))
        wait_for(in_maintenance(fleet, "web1"), what="web1 drained")
        fleet.container("web3").stop(timeout=2)  # web3 was serving: in-flight requests
        run = roll.wait()
    assert run.returncode != 0
    assert "ROLL STOPPED at web3" in run.output
    load.assert_no_failed_request()
    assert fleet.running_tag("web1") == target and fleet.running_tag("web2") == target
    fleet.container("web3").start()
    fleet.wait_for_ssh("web3")
    assert_converged(fleet, target)


@pytest.mark.parametrize(
    "signal_number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]
)
def test_deploy_killed_while_a_host_is_drained_is_repaired_by_the_next_run(
    healthy_fleet, signal_number
):
    fleet = healthy_fleet
    target = other_tag(fleet)
    with LoadRun(lb_urls()) as load:
        roll = BackgroundPyinfra(*deploy_args(target))
        wait_for(in_maintenance(fleet, "web2"), what="web2 drained")
        roll.process.send_signal(signal_number)
        run = roll.wait()
        assert run.returncode != 0
        if signal_number != signal.SIGKILL:
            # Ctrl-C, a cancelled CI job (SIGTERM), a closed terminal (SIGHUP): the host
            # in progress is finished, the roll stops before the next one...
            assert "ROLL STOPPED at web3: interrupted before this host" in run.output
            states = fleet.server_states()
            assert not {"MAINT", "DRAIN"} & set(states.values()), states
            assert fleet.running_tag("web2") == target
            # ...and the run ends normally: the lock given back, the audit line written.
            assert not lock_exists(fleet), fleet.sh("lb1", f"cat {LOCK}")[1]
            finished = [
                entry
                for entry in audit_entries(fleet)
                if entry.get("pid") == roll.process.pid and entry["event"] == "finished"
            ]
            assert len(finished) == 1, audit_entries(fleet)[-3:]
            assert (finished[0]["result"], finished[0]["stopped_at"]) == ("failed", "web3")
            assert finished[0]["signal"] == signal.Signals(signal_number).name
        else:
            # A killed deploy cannot give the lock back: the next run refuses, naming
            # it, until someone releases the lock explicitly.
            refused = pyinfra(*deploy_args(target))
            assert refused.returncode != 0
            assert f"(pid {roll.process.pid})" in refused.output, refused.output[-2000:]
            assert "another deploy holds the lock on lb1" in refused.output
            unlock = pyinfra("inventories/sandbox.py", "deploys/unlock.py")
            assert unlock.returncode == 0, unlock.output[-2000:]
            assert "released the deploy lock on lb1, held by" in unlock.output
        # The next plain run detects what is half done and repairs it.
        assert_converged(fleet, target)
    load.assert_no_failed_request()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGHUP])
def test_deploy_stopped_before_its_roll_gives_the_lock_back_and_touches_nothing(
    healthy_fleet, signal_number
):
    fleet = healthy_fleet
    before = {name: fleet.running_tag(name) for name in fleet.hosts("web")}
    with LoadRun(lb_urls()) as load:
        roll = BackgroundPyinfra(*deploy_args(other_tag(fleet)))
        # The lock is taken while the run is planned, well before the roll starts.
        wait_for(lambda: lock_exists(fleet), what="the deploy lock taken")
        roll.process.send_signal(signal_number)
        run = roll.wait()
    load.assert_no_failed_request()
    assert "Starting operation: Roll" not in run.output  # it never reached the roll
    assert not lock_exists(fleet), fleet.sh("lb1", f"cat {LOCK}")[1]
    finished = [
        entry
        for entry in audit_entries(fleet)
        if entry.get("pid") == roll.process.pid and entry["event"] == "finished"
    ]
    assert len(finished) == 1, audit_entries(fleet)[-3:]
    assert finished[0]["signal"] == signal.Signals(signal_number).name
    assert {name: fleet.running_tag(name) for name in fleet.hosts("web")} == before
    assert set(fleet.server_states().values()) == {"UP"}


def test_registry_down_aborts_before_any_drain(healthy_fleet):
    fleet = healthy_fleet
    target = other_tag(fleet)
    registry = fleet.docker.containers.get(fleet.cluster["container_prefix"] + "registry")
    registry.stop(timeout=2)
    try:
        with LoadRun(lb_urls()) as load:
            run = pyinfra(*deploy_args(target))
    finally:
        registry.start()
    assert run.returncode != 0
    assert "the registry does not answer as expected from web1" in run.output
    assert "Starting operation" not in run.output  # nothing ran: no pull, no drain
    load.assert_no_failed_request()
    assert set(fleet.server_states().values()) == {"UP"}
    # Up again when it answers HTTPS, verified by the CA the engine trusts, asking for a
    # password (401).
    wait_for(
        lambda: fleet.sh(
            "web1",
            "curl -s -o /dev/null -w '%{http_code}' "
            "--cacert /etc/docker/certs.d/registry:5000/ca.crt https://registry:5000/v2/",
        )[1]
        == "401"
    )
    assert_converged(fleet, target)


def test_ssh_connection_to_a_host_drops_during_its_swap(healthy_fleet):
    fleet = healthy_fleet
    target = other_tag(fleet)
    with LoadRun(lb_urls()) as load:
        roll = BackgroundPyinfra(*deploy_args(target))
        wait_for(in_maintenance(fleet, "web2"), what="web2 drained")
        # End the deploy user's SSH sessions on web2: the processes serving them (OpenSSH
        # 10, in Debian 13, names them sshd-session; before, sshd).
        code, pids = fleet.sh("web2", "pgrep -u deploy -x 'sshd|sshd-session'")
        assert code == 0 and pids.split(), pids
        fleet.sh("web2", "kill " + " ".join(pids.split()))
        run = roll.wait()
    assert run.returncode != 0
    assert "ROLL STOPPED at web2" in run.output and "connection lost" in run.output
    load.assert_no_failed_request()
    # It reconnected to put web2 back on its old release, in rotation.
    assert fleet.running_tag("web2") != target
    assert fleet.server_states()["web2"] == "UP"
    assert_converged(fleet, target)


def test_release_failing_in_haproxy_after_its_health_check_is_caught_by_the_canary(healthy_fleet):
    fleet = healthy_fleet
    previous = fleet.running_tag("web1")
    with LoadRun(lb_urls()) as load:
        # late-fail passes /up, then answers 500 on every page 5 s after it starts.
        run = pyinfra(*deploy_args("late-fail", "--data", "rollout_canary_observe_s=8"))
    assert run.returncode != 0
    assert "ROLL STOPPED at web1: canary gate:" in run.output
    load.assert_no_failed_request()  # HAProxy replayed each failed GET on a healthy server
    assert all(fleet.running_tag(name) == previous for name in fleet.hosts("web"))
    assert set(fleet.server_states().values()) == {"UP"}


def test_haproxy_reload_during_a_drain_keeps_the_server_drained(healthy_fleet):
    fleet = healthy_fleet
    target = other_tag(fleet)
    with LoadRun(lb_urls()) as load:
        roll = BackgroundPyinfra(*deploy_args(target, "--data", "rollout_drain_timeout_s=30"))
        wait_for(lambda: fleet.server_states().get("web2") in ("DRAIN", "MAINT"), what="web2 drain")
        load.mark("web2 draining, reload sent")
        code, output = fleet.sh("lb1", "systemctl reload haproxy")
        assert code == 0, output
        load.mark("reload done")
        state_after_reload = fleet.server_states()["web2"]
        run = roll.wait()
        load.mark("roll ended")
    assert state_after_reload in ("DRAIN", "MAINT")
    assert run.returncode == 0, run.failure_excerpt()
    load.assert_no_failed_request(context=f"{run.output[-2500:]}\n{fleet.server_changes()}")
    assert set(fleet.server_states().values()) == {"UP"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--limit", "web9"], "--limit 'web9' matches no host or group"),
        (["--data", "image_tag=v2", "--data", "rollout_batch_size=0"], "batch size 0 must be"),
        (
            ["--data", "image_tag=v2", "--data", "rollout_batch_size=150%"],
            "batch size '150%' must be above 0% and at most 100%",
        ),
        (["--data", "image_tag=v2:latest"], "image tag 'v2:latest' is not a valid Docker tag"),
        (["--data", "image_tagg=v2"], "--data image_tagg: unknown key"),
    ],
)
def test_bad_input_is_refused_before_any_host_is_touched(healthy_fleet, args, message):
    with LoadRun(lb_urls()) as load:
        run = pyinfra("inventories/sandbox.py", "deploys/web.py", *args)
    load.assert_no_failed_request(context=healthy_fleet.server_changes())
    states = healthy_fleet.server_states()
    assert set(states.values()) == {"UP"}, f"{states}\n{healthy_fleet.server_changes()}"
    assert run.returncode != 0
    assert message in run.output
    assert "Starting operation" not in run.output


def test_malformed_group_data_names_the_file(healthy_fleet, tmp_path):
    inventory = copy_sandbox_inventory(tmp_path)
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "web.py").write_text("app_env = {\n")
    with LoadRun(lb_urls()) as load:
        run = pyinfra(str(inventory), "deploys/web.py", "--data", "image_tag=v2")
    load.assert_no_failed_request()
    assert run.returncode != 0
    assert "group_data/web.py" in run.output
    assert "Starting operation" not in run.output


def test_malformed_inventory_names_the_file(healthy_fleet, tmp_path):
    inventory = tmp_path / "broken.py"
    inventory.write_text("web = [('web1', {'ssh_port': 2211)]\n")
    with LoadRun(lb_urls()) as load:
        run = pyinfra(str(inventory), "deploys/web.py", "--data", "image_tag=v2")
    load.assert_no_failed_request()
    assert run.returncode != 0
    assert "broken.py" in run.output
    assert "Starting operation" not in run.output


def test_empty_web_group_is_refused(healthy_fleet, tmp_path):
    inventory = copy_sandbox_inventory(tmp_path, extra="\nweb = []\n")
    with LoadRun(lb_urls()) as load:
        run = pyinfra(str(inventory), "deploys/web.py", "--data", "image_tag=v2")
    load.assert_no_failed_request()
    assert run.returncode != 0
    assert "no hosts in group 'web'" in run.output
    assert "Starting operation" not in run.output


def test_the_last_server_up_is_never_drained(healthy_fleet):
    fleet = healthy_fleet
    target = other_tag(fleet)
    previous = fleet.running_tag("web1")
    seen = set()
    # An operator took web2 and web3 out: web1 is the last server UP on lb1.
    fleet.set_server_state("lb1", "web2", "maint")
    fleet.set_server_state("lb1", "web3", "maint")
    try:
        with LoadRun(lb_urls()) as load:
            roll = BackgroundPyinfra(*deploy_args(target, "--data", "rollout_last_server_wait_s=3"))
            while roll.process.poll() is None:
                seen.add(fleet.server_states()["web1"])
            run = roll.wait()
        load.assert_no_failed_request()
    finally:
        fleet.set_server_state("lb1", "web2", "ready")
        fleet.set_server_state("lb1", "web3", "ready")
    assert run.returncode != 0
    assert (
        "ROLL STOPPED at web1: refusing to drain web1, the last server UP (lb1: no other "
        "server of backend web is UP here after 3s: web2 MAINT, web3 MAINT); set "
        "rollout_drain_last_server = True to drain it anyway"
    ) in run.output
    assert seen == {"UP"}  # web1 was never drained
    assert fleet.running_tag("web1") == previous
    wait_for(lambda: set(fleet.server_states().values()) == {"UP"}, what="all servers UP")


@contextmanager
def frozen_container_runtime(fleet: World, name: str):
    """containerd stopped (SIGSTOP) on a host: its running containers go on serving, but
    every `docker` command that needs a container started or stopped hangs, as with a
    wedged container runtime. Thawed (SIGCONT) whatever happens."""
    code, pid = fleet.sh(name, "systemctl show --property MainPID --value containerd")
    assert code == 0 and pid.strip().isdigit() and pid.strip() != "0", pid
    code, output = fleet.sh(name, f"kill -STOP {pid.strip()}")
    assert code == 0, output
    try:
        yield
    finally:
        code, output = fleet.sh(name, f"kill -CONT {pid.strip()}")
        assert code == 0, output


def test_a_hung_command_is_killed_on_the_host_at_its_time_limit_and_the_host_goes_back(
    healthy_fleet,
):
    fleet = healthy_fleet
    target = other_tag(fleet)
    previous = fleet.running_tag("web1")
    with LoadRun(lb_urls()) as load:
        # Frozen before the run: what comes before the roll (facts, images present) and
        # web1's listing and drain need no container started; its new app's start does.
        with frozen_container_runtime(fleet, "web1"):
            run = pyinfra(*deploy_args(target, "--data", "rollout_command_timeout_s=20"))
            # Read while containerd is still frozen: the old pair serves regardless.
            web1_state = fleet.server_states()["web1"]
    assert run.returncode != 0
    assert (
        "ROLL STOPPED at web1: start the new app container failed: exit 124: killed: "
        "exceeded its time limit of 20s on the host. web1 is back on its previous release "
        "and in rotation."
    ) in run.output, run.output[-4000:]
    assert web1_state == "UP"
    load.assert_no_failed_request()
    # Thawed, the interrupted start completes: the next plain run clears it away.
    wait_for(lambda: set(fleet.server_states().values()) == {"UP"}, what="all servers UP")
    assert_converged(fleet, target)
    assert fleet.running_tag("web1") == target != previous


def test_a_canary_whose_counters_a_reload_reset_goes_back(healthy_fleet):
    fleet = healthy_fleet
    previous = fleet.running_tag("web1")
    target = other_tag(fleet)
    with LoadRun(lb_urls()) as load:
        roll = BackgroundPyinfra(*deploy_args(target, "--data", "rollout_canary_observe_s=10"))
        wait_for(in_maintenance(fleet, "web1"), what="web1 drained")
        wait_for(lambda: fleet.server_states()["web1"] == "UP", what="web1 in its canary window")
        code, output = fleet.sh("lb1", "systemctl reload haproxy")
        assert code == 0, output
        run = roll.wait()
    assert run.returncode != 0
    assert (
        "ROLL STOPPED at web1: canary gate cannot trust lb1's counters: HAProxy reloaded "
        "during the window"
    ) in run.output, run.output[-4000:]
    load.assert_no_failed_request()
    assert fleet.running_tag("web1") == previous
    wait_for(lambda: set(fleet.server_states().values()) == {"UP"}, what="all servers UP")
