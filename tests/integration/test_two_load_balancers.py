"""Two load balancers (SANDBOX_LB=2): both drained and re-enabled in step, both under load.

Runs after the other integration modules: it grows the shared sandbox by lb2."""

from __future__ import annotations

import pytest

from .sandbox_world import (
    BackgroundPyinfra,
    LoadRun,
    World,
    lb_urls,
    pyinfra,
    sandbox_cli,
    wait_for,
)


def both_lbs() -> list[str]:
    """lb1's HTTP door and both of lb2's."""
    return lb_urls("lb1")[:1] + lb_urls("lb2")


@pytest.fixture(scope="module")
def two_lbs(on_v1):
    sandbox_cli("up", env={"SANDBOX_LB": "2"})
    # lb2 is fresh and takes root; the hardened hosts refuse it and are re-run as deploy.
    pyinfra("inventories/sandbox.py", "deploys/bootstrap.py", "--user", "root")
    bootstrap = pyinfra("inventories/sandbox.py", "deploys/bootstrap.py")
    assert bootstrap.returncode == 0, bootstrap.failure_excerpt()
    provision = pyinfra("inventories/sandbox.py", "deploys/provision.py")
    assert provision.returncode == 0, provision.failure_excerpt()
    world = World()
    assert world.hosts("lb") == ["lb1", "lb2"]
    return world


def test_both_lbs_see_every_web_host_up(two_lbs):
    for lb in ("lb1", "lb2"):
        assert two_lbs.server_states(lb) == {"web1": "UP", "web2": "UP", "web3": "UP"}


def test_roll_under_load_on_both_lbs_fails_no_request(two_lbs):
    current = two_lbs.running_tag("web1")
    target = "v2" if current == "v1" else "v1"
    with LoadRun(both_lbs()) as load:
        run = pyinfra("inventories/sandbox.py", "deploys/web.py", "--data", f"image_tag={target}")
    assert run.returncode == 0, run.failure_excerpt()
    load.assert_no_failed_request()
    per_url = {url.rstrip("/"): counts for url, counts in load.results["per_url"].items()}
    for url in both_lbs():
        assert per_url[url.rstrip("/")]["failed"] == 0
        assert per_url[url.rstrip("/")]["sent"] > 0
    assert load.last_version == target
    assert all(two_lbs.running_tag(name) == target for name in two_lbs.hosts("web"))
    for lb in ("lb1", "lb2"):
        assert set(two_lbs.server_states(lb).values()) == {"UP"}


def test_restarted_lb_comes_back_with_its_server_states(two_lbs):
    two_lbs.set_server_state("lb2", "web2", "drain")
    code, output = two_lbs.sh("lb2", "systemctl restart haproxy")
    assert code == 0, output
    assert two_lbs.server_states("lb2")["web2"] == "DRAIN"
    two_lbs.set_server_state("lb2", "web2", "ready")
    wait_for(lambda: two_lbs.server_states("lb2")["web2"] == "UP", what="web2 UP on lb2")


def test_lb_restart_mid_roll_the_other_lb_keeps_serving(two_lbs):
    fleet = two_lbs
    target = "v2" if fleet.running_tag("web1") == "v1" else "v1"
    args = ["inventories/sandbox.py", "deploys/web.py", "--data", f"image_tag={target}"]
    with LoadRun(lb_urls("lb1")) as lb1_load:
        roll = BackgroundPyinfra(*args)
        wait_for(lambda: fleet.server_states("lb2").get("web2") == "MAINT", what="web2 drained")
        code, output = fleet.sh("lb2", "systemctl restart haproxy")
        assert code == 0, output
        run = roll.wait()
    lb1_load.assert_no_failed_request()
    if run.returncode != 0:
        # The restart caught the roll talking to lb2: it stopped, naming the host.
        assert "ROLL STOPPED at web" in run.output, run.output[-3000:]
        rerun = pyinfra(*args)
        assert rerun.returncode == 0, rerun.failure_excerpt()
    assert all(fleet.running_tag(name) == target for name in fleet.hosts("web"))
    for lb in ("lb1", "lb2"):
        assert set(fleet.server_states(lb).values()) == {"UP"}, lb
