"""The app image pipeline (app/Makefile): `make test` runs the app's tests inside the
image that was built, and `make release TAG=...` pushes only an image whose tests
passed. This is also how the project's CI runs the example app's tests."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from .sandbox_world import REPO_ROOT, registry_from_here


def make_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "-C", "app", *args, f"REGISTRY={registry_from_here()}"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture
def release_tag():
    """A tag no other run uses; its local images are removed afterwards."""
    tag = f"ci-{uuid.uuid4().hex[:8]}"
    yield tag
    image = f"{registry_from_here()}/deploykit/app:{tag}"
    docker("image", "rm", "--force", image, f"deploykit-app-test:{tag}")


def in_registry(tag: str) -> subprocess.CompletedProcess:
    """Pull the tag from the sandbox registry after dropping any local copy: the pull
    succeeds only if the registry holds it."""
    image = f"{registry_from_here()}/deploykit/app:{tag}"
    docker("image", "rm", "--force", image)
    return docker("pull", "--quiet", image)


def test_release_pushes_an_image_whose_tests_passed(fresh_sandbox, release_tag):
    """`make release` = `make test` (CI's run of the example app's tests, inside the
    image as it will be deployed), then the push."""
    released = make_app("release", f"TAG={release_tag}", "DOCKER_BUILD_FLAGS=--quiet")
    assert released.returncode == 0, released.stdout[-4000:]
    assert " passed" in released.stdout and "failed" not in released.stdout, released.stdout
    pulled = in_registry(release_tag)
    assert pulled.returncode == 0, pulled.stdout
    version = docker(
        "image",
        "inspect",
        "--format",
        '{{index .Config.Labels "org.opencontainers.image.version"}}',
        f"{registry_from_here()}/deploykit/app:{release_tag}",
    )
    assert version.stdout.strip() == release_tag


def test_release_pushes_nothing_when_a_test_fails(fresh_sandbox, release_tag):
    """A build whose own settings fail its health check (APP_BROKEN=1 baked in) fails
    its tests, and the registry never sees it."""
    released = make_app(
        "release", f"TAG={release_tag}", "APP_BROKEN=1", "DOCKER_BUILD_FLAGS=--quiet"
    )
    assert released.returncode != 0, released.stdout[-4000:]
    assert "test_the_app_is_healthy_with_the_environment_it_runs_in" in released.stdout
    assert "1 failed" in released.stdout, released.stdout[-2000:]
    pulled = in_registry(release_tag)
    assert pulled.returncode != 0, f"a release whose tests failed was pushed:\n{pulled.stdout}"
    assert "not found" in pulled.stdout or "manifest unknown" in pulled.stdout, pulled.stdout
