"""The integration tests share one freshly created sandbox, bootstrapped and provisioned
once per session; each test then asserts outcomes on the hosts."""

from __future__ import annotations

import os
import subprocess

import pytest

from sandbox.images import DEFAULT_RELEASE

from .sandbox_world import REPO_ROOT, World, pyinfra, registry_from_here, sandbox_cli

# The Debian release of every host this session: SANDBOX_RELEASE, else Debian 13.
# `make test` runs the whole suite on Debian 13 hosts, then the modules marked
# `every_release` on Debian 12 hosts (SANDBOX_RELEASE=bookworm -m every_release).
RELEASE = os.environ.get("SANDBOX_RELEASE") or DEFAULT_RELEASE
TOPOLOGY = {
    "SANDBOX_WEB": "3",
    "SANDBOX_LB": "1",
    "SANDBOX_JOB": "1",
    "SANDBOX_DB": "1",
    "SANDBOX_RELEASE": RELEASE,
    # Hosts of another release only where a test asks (test_mixed_releases).
    "SANDBOX_RELEASES": "",
}


# The modules share one sandbox and run in this order: provisioning first, the app
# image pipeline (it needs only the registry), the data tier, the plain rolls, the
# faults, the changed host key, then the second load balancer (which grows the sandbox)
# and the fleet of mixed releases (which replaces web1 by a host of the other release).
MODULE_ORDER = [
    "test_provision",
    "test_hardening",
    "test_provision_parts",
    "test_releases",
    "test_app_image",
    "test_secrets",
    "test_data_tier",
    "test_rolling_deploy",
    "test_reload_storm",
    "test_moving_tags",
    "test_registry",
    "test_backend_tls",
    "test_operations",
    "test_adhoc",
    "test_remote_syslog",
    "test_oneoff",
    "test_jobs",
    "test_scheduled_jobs",
    "test_stack",
    "test_faults",
    "test_host_keys",
    "test_two_load_balancers",
    "test_mixed_releases",
]


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__.rsplit(".", 1)[-1]
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=lambda item: rank(item) if "integration" in str(item.fspath) else -1)
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


# For developing one test module against a sandbox that is already bootstrapped and
# provisioned: DEPLOYKIT_REUSE_SANDBOX=1 pytest tests/integration/test_x.py. CI never
# sets it, so the full suite always starts from fresh hosts.
REUSE_SANDBOX = os.environ.get("DEPLOYKIT_REUSE_SANDBOX") == "1"


@pytest.fixture(scope="session")
def fresh_sandbox():
    """Fresh hosts, as new VMs: nothing from an earlier run survives."""
    if REUSE_SANDBOX:
        return World()
    sandbox_cli("down")
    sandbox_cli("up", env=TOPOLOGY)
    for key, value in TOPOLOGY.items():
        os.environ[key] = value
    return World()


@pytest.fixture(scope="session")
def first_runs(fresh_sandbox):
    """Bootstrap once as root, then provision twice as deploy; every output is kept."""
    if REUSE_SANDBOX:
        return {}
    runs = {
        "bootstrap": pyinfra("inventories/sandbox.py", "deploys/bootstrap.py", "--user", "root"),
        "bootstrap_again": pyinfra(
            "inventories/sandbox.py", "deploys/bootstrap.py", "--user", "root"
        ),
    }
    runs["provision"] = pyinfra("inventories/sandbox.py", "deploys/provision.py")
    runs["provision_again"] = pyinfra("inventories/sandbox.py", "deploys/provision.py")
    return runs


@pytest.fixture(scope="session")
def fleet(fresh_sandbox, first_runs):
    """A provisioned sandbox (the runs above must have succeeded)."""
    for name, run in first_runs.items():
        assert run.returncode == 0, f"{name} failed:\n{run.failure_excerpt()}"
    return fresh_sandbox


@pytest.fixture(scope="session")
def on_v1(fleet):
    """Images in the sandbox registry, and every web host serving v1."""
    if REUSE_SANDBOX and all(fleet.running_tag(n) == "v1" for n in fleet.hosts("web")):
        return fleet
    built = subprocess.run(
        ["make", "-s", "images", f"REGISTRY={registry_from_here()}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    run = pyinfra("inventories/sandbox.py", "deploys/web.py", "--data", "image_tag=v1")
    assert run.returncode == 0, run.failure_excerpt()
    assert {name: fleet.running_tag(name) for name in fleet.hosts("web")} == {
        "web1": "v1",
        "web2": "v1",
        "web3": "v1",
    }
    return fleet
