"""Faults during a roll, each under continuous load through HAProxy (150 requests/s).

Each test asserts: (a) no failed request while a healthy server remained; (b) the deploy
exits non-zero naming the host and the cause; (c) a plain re-run after the fault is
removed converges, every host on the target tag and every server UP; (d) no host is
left drained or in maintenance by the failure (after the re-run, for a killed deploy).
"""

from __future__ import annotations

import signal

import pytest

from .sandbox_world import (
    BackgroundPyinfra,
    LoadRun,
    World,
    copy_sandbox_inventory,
    deploy_args,
    other_tag,
    pyinfra,
    wait_for,
)

URLS = ["http://127.0.0.1:8080/", "https://127.0.0.1:8443/"]


def assert_converged(fleet: World, tag: str) -> None:
    """(c) and (d): a plain re-run brings every host to the tag, every server UP."""
    run = pyinfra(*deploy_args(tag))
    assert run.returncode == 0, run.output[-4000:]
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
    with LoadRun(URLS) as load:
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
    with LoadRun(URLS) as load:
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


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGKILL])
def test_deploy_killed_while_a_host_is_drained_is_repaired_by_the_next_run(
    healthy_fleet, signal_number
):
    fleet = healthy_fleet
    target = other_tag(fleet)
    with LoadRun(URLS) as load:
        roll = BackgroundPyinfra(*deploy_args(target))
        wait_for(in_maintenance(fleet, "web2"), what="web2 drained")
        roll.process.send_signal(signal_number)
        run = roll.wait()
        assert run.returncode != 0
        if signal_number == signal.SIGINT:
            # Ctrl-C finishes the host in progress and stops before the next one.
            assert "ROLL STOPPED at web3: interrupted before this host" in run.output
            assert "MAINT" not in fleet.server_states().values()
            assert fleet.running_tag("web2") == target
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


def test_registry_down_aborts_before_any_drain(healthy_fleet):
    fleet = healthy_fleet
    target = other_tag(fleet)
    registry = fleet.docker.containers.get("deploykit-sandbox-registry")
    registry.stop(timeout=2)
    try:
        with LoadRun(URLS) as load:
            run = pyinfra(*deploy_args(target))
    finally:
        registry.start()
    assert run.returncode != 0
    assert "the registry does not answer as expected from web1" in run.output
    assert "Starting operation" not in run.output  # nothing ran: no pull, no drain
    load.assert_no_failed_request()
    assert set(fleet.server_states().values()) == {"UP"}
    wait_for(lambda: fleet.sh("web1", "curl -sf http://registry:5000/v2/")[0] == 0)
    assert_converged(fleet, target)


def test_ssh_connection_to_a_host_drops_during_its_swap(healthy_fleet):
    fleet = healthy_fleet
    target = other_tag(fleet)
    with LoadRun(URLS) as load:
        roll = BackgroundPyinfra(*deploy_args(target))
        wait_for(in_maintenance(fleet, "web2"), what="web2 drained")
        # End the deploy user's SSH sessions on web2: the sshd processes serving them.
        code, pids = fleet.sh("web2", "pgrep -u deploy -x sshd")
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
    with LoadRun(URLS) as load:
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
    with LoadRun(URLS) as load:
        roll = BackgroundPyinfra(*deploy_args(target, "--data", "rollout_drain_timeout_s=30"))
        wait_for(lambda: fleet.server_states().get("web2") in ("DRAIN", "MAINT"), what="web2 drain")
        code, output = fleet.sh("lb1", "systemctl reload haproxy")
        assert code == 0, output
        state_after_reload = fleet.server_states()["web2"]
        run = roll.wait()
    assert state_after_reload in ("DRAIN", "MAINT")
    assert run.returncode == 0, run.output[-4000:]
    load.assert_no_failed_request()
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
    with LoadRun(URLS) as load:
        run = pyinfra("inventories/sandbox.py", "deploys/web.py", *args)
    load.assert_no_failed_request()
    assert set(healthy_fleet.server_states().values()) == {"UP"}
    assert run.returncode != 0
    assert message in run.output
    assert "Starting operation" not in run.output


def test_malformed_group_data_names_the_file(healthy_fleet, tmp_path):
    inventory = copy_sandbox_inventory(tmp_path)
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "web.py").write_text("app_env = {\n")
    with LoadRun(URLS) as load:
        run = pyinfra(str(inventory), "deploys/web.py", "--data", "image_tag=v2")
    load.assert_no_failed_request()
    assert run.returncode != 0
    assert "group_data/web.py" in run.output
    assert "Starting operation" not in run.output


def test_malformed_inventory_names_the_file(healthy_fleet, tmp_path):
    inventory = tmp_path / "broken.py"
    inventory.write_text("web = [('web1', {'ssh_port': 2211)]\n")
    with LoadRun(URLS) as load:
        run = pyinfra(str(inventory), "deploys/web.py", "--data", "image_tag=v2")
    load.assert_no_failed_request()
    assert run.returncode != 0
    assert "broken.py" in run.output
    assert "Starting operation" not in run.output


def test_empty_web_group_is_refused(healthy_fleet, tmp_path):
    inventory = copy_sandbox_inventory(tmp_path, extra="\nweb = []\n")
    with LoadRun(URLS) as load:
        run = pyinfra(str(inventory), "deploys/web.py", "--data", "image_tag=v2")
    load.assert_no_failed_request()
    assert run.returncode != 0
    assert "no hosts in group 'web'" in run.output
    assert "Starting operation" not in run.output
