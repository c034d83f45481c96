"""A fleet in the middle of an OS upgrade: web1 runs Debian 12 and the other web hosts
Debian 13 (the other way round when the session's hosts run Debian 12). Each host gets
its own release's packages, and a roll under load fails no request.

Runs last: it replaces web1 by a fresh host of the other release and leaves it so."""

from __future__ import annotations

import pytest

from .sandbox_world import LoadRun, World, deploy_args, lb_urls, other_tag, pyinfra, sandbox_cli

OTHER_RELEASE = {"trixie": "bookworm", "bookworm": "trixie"}
DEBIAN_VERSION = {"trixie": "13", "bookworm": "12"}


def topology_of(world: World) -> dict[str, str]:
    """The SANDBOX_* counts of the sandbox as it is (test_two_load_balancers grew it)."""
    return {
        f"SANDBOX_{group.upper()}": str(len(world.hosts(group)))
        for group in ("lb", "web", "job", "db")
    }


@pytest.fixture(scope="module")
def mixed_fleet(on_v1):
    fleet_release = on_v1.release("web2")
    web1_release = OTHER_RELEASE[fleet_release]
    if on_v1.release("web1") != web1_release:
        sandbox_cli("up", env={**topology_of(on_v1), "SANDBOX_RELEASES": f"web1={web1_release}"})
        # web1 is a fresh host, with a new address and host key: bootstrap it as root.
        bootstrap = pyinfra(
            "inventories/sandbox.py", "deploys/bootstrap.py", "--user", "root", "--limit", "web1"
        )
        assert bootstrap.returncode == 0, bootstrap.failure_excerpt()
    world = World()
    assert world.release("web1") == web1_release
    # HAProxy's backends and the firewalls learn web1's new address.
    provision = pyinfra("inventories/sandbox.py", "deploys/provision.py")
    assert provision.returncode == 0, provision.failure_excerpt()
    # web1 joins on the release the others run.
    run = pyinfra(*deploy_args(world.running_tag("web2")))
    assert run.returncode == 0, run.failure_excerpt()
    return world


def test_each_web_host_runs_its_own_release(mixed_fleet):
    releases = {name: mixed_fleet.release(name) for name in mixed_fleet.hosts("web")}
    assert len(set(releases.values())) == 2, releases
    for name, release in releases.items():
        os_release = mixed_fleet.os_release(name)
        assert os_release["VERSION_CODENAME"] == release, (name, os_release)
        assert os_release["VERSION_ID"] == DEBIAN_VERSION[release], (name, os_release)
    # Docker comes from each host's own release: 20.10 on Debian 12, 26.1 on Debian 13.
    engines = {}
    for name in mixed_fleet.hosts("web"):
        code, output = mixed_fleet.sh(name, "docker version --format '{{.Server.Version}}'")
        assert code == 0, output
        engines[mixed_fleet.release(name)] = output.strip().split(".")[0]
    assert engines == {"bookworm": "20", "trixie": "26"}, engines


def test_a_second_provision_of_the_mixed_fleet_changes_nothing(mixed_fleet):
    run = pyinfra("inventories/sandbox.py", "deploys/provision.py")
    assert run.returncode == 0, run.failure_excerpt()
    assert run.grand_total()["changed"] == 0, run.changed_operations()


def test_roll_across_releases_under_load_fails_no_request(mixed_fleet):
    target = other_tag(mixed_fleet)
    with LoadRun(lb_urls()) as load:
        run = pyinfra(*deploy_args(target))
    assert run.returncode == 0, run.failure_excerpt()
    load.assert_no_failed_request()
    assert load.last_version == target
    assert {name: mixed_fleet.running_tag(name) for name in mixed_fleet.hosts("web")} == {
        name: target for name in mixed_fleet.hosts("web")
    }
    assert set(mixed_fleet.server_states().values()) == {"UP"}
