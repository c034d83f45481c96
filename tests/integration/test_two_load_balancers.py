"""Two load balancers (SANDBOX_LB=2): both drained and re-enabled in step, both under load.

Runs after the other integration modules: it grows the shared sandbox by lb2."""

from __future__ import annotations

import pytest

from .sandbox_world import LoadRun, World, pyinfra, sandbox_cli

BOTH_LBS = ["http://127.0.0.1:8080/", "http://127.0.0.1:8081/", "https://127.0.0.1:8444/"]


@pytest.fixture(scope="module")
def two_lbs(on_v1):
    sandbox_cli("up", env={"SANDBOX_LB": "2"})
    # lb2 is fresh and takes root; the hardened hosts refuse it and are re-run as deploy.
    pyinfra("inventories/sandbox.py", "deploys/bootstrap.py", "--user", "root")
    bootstrap = pyinfra("inventories/sandbox.py", "deploys/bootstrap.py")
    assert bootstrap.returncode == 0, bootstrap.output[-4000:]
    provision = pyinfra("inventories/sandbox.py", "deploys/provision.py")
    assert provision.returncode == 0, provision.output[-4000:]
    world = World()
    assert world.hosts("lb") == ["lb1", "lb2"]
    return world


def test_both_lbs_see_every_web_host_up(two_lbs):
    for lb in ("lb1", "lb2"):
        assert two_lbs.server_states(lb) == {"web1": "UP", "web2": "UP", "web3": "UP"}


def test_roll_under_load_on_both_lbs_fails_no_request(two_lbs):
    current = two_lbs.running_tag("web1")
    target = "v2" if current == "v1" else "v1"
    with LoadRun(BOTH_LBS) as load:
        run = pyinfra("inventories/sandbox.py", "deploys/web.py", "--data", f"image_tag={target}")
    assert run.returncode == 0, run.output[-4000:]
    load.assert_no_failed_request()
    per_url = {url.rstrip("/"): counts for url, counts in load.results["per_url"].items()}
    for url in BOTH_LBS:
        assert per_url[url.rstrip("/")]["failed"] == 0
        assert per_url[url.rstrip("/")]["sent"] > 0
    assert load.last_version == target
    assert all(two_lbs.running_tag(name) == target for name in two_lbs.hosts("web"))
    for lb in ("lb1", "lb2"):
        assert set(two_lbs.server_states(lb).values()) == {"UP"}
