"""Moving tags (`latest`): a roll resolves the tag to its manifest digest once, while
planning, and every host pulls and runs repository@digest. A tag pushed again is a new
release; a tag pushed while a roll runs reaches no host; a rollback returns to the exact
digest; pruning keeps the last releases by digest. Under load, 0 failed requests."""

from __future__ import annotations

import subprocess

import pytest

from deploykit.commands.images import Version, digest_tag

from .sandbox_world import (
    BackgroundPyinfra,
    LoadRun,
    lb_urls,
    local_image_id,
    pushed_digest,
    pyinfra,
    registry_from_here,
    wait_for,
)

LATEST = ("inventories/sandbox.py", "deploys/web.py", "--data", "image_tag=latest")
HOST_REPOSITORY = "registry:5000/deploykit/app"
RELEASE_LOG = "/var/lib/deploykit/releases"


def local(tag: str) -> str:
    return f"{registry_from_here()}/deploykit/app:{tag}"


def push_as_latest(source_tag: str) -> str:
    """Push the local app:SOURCE as app:latest; its digest in the registry."""
    for command in (
        ["docker", "tag", local(source_tag), local("latest")],
        ["docker", "push", "--quiet", local("latest")],
    ):
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return pushed_digest("latest")


def short(digest: str) -> str:
    return Version("latest", digest).short


def assert_every_web_host_runs(fleet, digest: str, source_tag: str) -> None:
    """The app container of every web host says this digest, and really runs its image."""
    wanted = {(digest, local_image_id(source_tag))}
    for name in fleet.hosts("web"):
        assert fleet.running_versions(name) == wanted, name


@pytest.fixture(scope="module", autouse=True)
def back_on_the_tag_of_before(on_v1):
    """The modules after this one expect the web hosts on v1 or v2 by name: the fleet
    goes back to the tag it ran before, once these tests are done."""
    before = on_v1.running_tag("web1")
    yield
    if on_v1.running_tag("web1") != before:
        run = pyinfra("inventories/sandbox.py", "deploys/web.py", "--data", f"image_tag={before}")
        assert run.returncode == 0, run.failure_excerpt()


@pytest.fixture(scope="module")
def third_image():
    """A third app image, built here: v1 with APP_VERSION=v3, so a response from it
    would show; pushed only by the test that needs it."""
    dockerfile = f"FROM {local('v1')}\nENV APP_VERSION=v3\n"
    built = subprocess.run(
        ["docker", "build", "--quiet", "--tag", local("v3-moving"), "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return "v3-moving"


def running_source(fleet) -> str:
    """Of v1 and v2, the image web1 runs now."""
    [(_, image_id)] = fleet.running_versions("web1")
    return {local_image_id("v1"): "v1", local_image_id("v2"): "v2"}.get(image_id, "other")


def test_latest_pushed_again_is_rolled_to_its_new_digest(on_v1):
    fleet = on_v1
    first = push_as_latest("v1")
    with LoadRun(lb_urls()) as load:
        run = pyinfra(*LATEST)
    assert run.returncode == 0, run.failure_excerpt()
    load.assert_no_failed_request()
    assert_every_web_host_runs(fleet, first, "v1")
    # v1 was deployed as `v1` before: same bits, but another release (tag and digest).
    assert f"-> {short(first)}" in run.output

    second = push_as_latest("v2")
    assert second != first
    plan = pyinfra(*LATEST, "--dry")
    assert plan.returncode == 0, plan.failure_excerpt()
    assert f"pinned to {second}" in plan.output
    assert f"  canary    web1             {short(first)} -> {short(second)}" in plan.output

    with LoadRun(lb_urls()) as load:
        run = pyinfra(*LATEST)
    assert run.returncode == 0, run.failure_excerpt()
    load.assert_no_failed_request()
    assert load.last_version == "v2"
    assert_every_web_host_runs(fleet, second, "v2")
    for name in fleet.hosts("web"):
        assert f"{name:<12} {short(first)} -> {short(second)}" in run.output
    # The release log and the status report say tag and digest.
    _, log = fleet.sh("web1", f"tail -n 2 {RELEASE_LOG}")
    assert log.split() == [f"latest@{first}", f"latest@{second}"]
    status = pyinfra("inventories/sandbox.py", "deploys/status.py")
    assert status.returncode == 0, status.failure_excerpt()
    assert f"web1       app      {short(second)}" in status.output

    # Nothing moved: a third run changes nothing.
    again = pyinfra(*LATEST)
    assert again.returncode == 0, again.failure_excerpt()
    assert "already on this release" in again.output
    assert_every_web_host_runs(fleet, second, "v2")


def test_an_image_pushed_under_the_tag_during_a_roll_reaches_no_host(on_v1, third_image):
    fleet = on_v1
    target = "v1" if running_source(fleet) != "v1" else "v2"
    pinned = push_as_latest(target)
    third_id = local_image_id(third_image)
    with LoadRun(lb_urls()) as load:
        roll = BackgroundPyinfra(*LATEST)
        # The digest is resolved while planning, before any host pulls: push the third
        # image as soon as the plan is out, while the hosts pull and roll.
        wait_for(
            lambda: "deploykit: plan: roll" in roll.log.read_text(),
            timeout=300,
            what="the roll's plan",
        )
        moved = push_as_latest(third_image)
        run = roll.wait()
    assert moved != pinned
    assert run.returncode == 0, run.failure_excerpt()
    assert f"pinned to {pinned}" in run.output
    load.assert_no_failed_request()
    assert load.results["version_counts"].get("v3") is None
    assert_every_web_host_runs(fleet, pinned, target)
    for name in fleet.hosts("web"):
        code, _ = fleet.sh(name, f"docker image inspect {third_id}")
        assert code != 0, f"{name} has the image pushed during the roll"


def test_rollback_returns_to_the_exact_digest_and_pruning_keeps_digests(on_v1):
    """`latest` now points to an image no host ran (the test above): the rollback goes to
    the digest of the release before, by the release log, not to the tag."""
    fleet = on_v1
    _, log = fleet.sh("web1", f"cat {RELEASE_LOG}")
    releases = [Version.parse(line) for line in log.split()]
    current = releases[-1]
    previous = next(r for r in reversed(releases) if r != current)
    assert previous.digest, log
    with LoadRun(lb_urls()) as load:
        run = pyinfra("inventories/sandbox.py", "deploys/rollback.py")
    assert run.returncode == 0, run.failure_excerpt()
    load.assert_no_failed_request()
    for name in fleet.hosts("web"):
        [(digest, _)] = fleet.running_versions(name)
        assert digest == previous.digest, name
    # Pruning kept the images of the last 3 distinct releases (rollout_keep_releases),
    # each by its digest tag, and nothing else of the app's repository.
    _, log = fleet.sh("web1", f"cat {RELEASE_LOG}")
    kept = []
    for line in reversed(log.split()):
        version = Version.parse(line)
        name = digest_tag(version.digest) if version.digest else version.tag
        if name not in kept:
            kept.append(name)
    _, tags = fleet.sh("web1", f"docker image ls --format '{{{{.Tag}}}}' {HOST_REPOSITORY}")
    assert set(tags.split()) == set(kept[:3]), (tags, log)
