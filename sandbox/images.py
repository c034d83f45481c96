"""Images the sandbox needs: Debian base images, VM-like hosts, and a registry.

Hosts come in two Debian releases, Debian 13 "trixie" (the default, Debian's stable
release) and Debian 12 "bookworm", so every image but the registry's is tagged by
release (``deploykit/sandbox-host:trixie``). The bookworm base is always built: the
registry and the demo app's images start from it, whatever release the hosts run.

Base images are built once and cached by tag. Where Docker Hub is reachable (a
laptop) they start from ``debian:<release>``; where it is not (CI, air-gapped build
machines) they are made with ``debootstrap`` and ``docker import``. Both paths give the
same contents: minbase plus ``BASE_PACKAGES``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors

log = logging.getLogger("sandbox")

IMAGES_DIR = Path(__file__).parent / "images"

# Debian codename -> version, newest first; the first one is the default.
RELEASES = {"trixie": "13", "bookworm": "12"}
DEFAULT_RELEASE = "trixie"
# What the registry and the app images start from (app/Makefile, tests' images).
APP_BASE_RELEASE = "bookworm"

REGISTRY_IMAGE = "deploykit/sandbox-registry:bookworm"

BASE_PACKAGES = ["python3", "ca-certificates", "curl", "iproute2", "procps"]
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SANDBOX_LABEL = "io.deploykit.sandbox"


def base_image(release: str) -> str:
    return f"deploykit/sandbox-base:{release}"


def host_image(release: str) -> str:
    """deploykit/sandbox-host:trixie-<recipe>: tagged by its recipe too, so a changed
    Dockerfile builds a new image instead of reusing a stale one (work trees sharing one
    Docker engine each get theirs)."""
    return f"deploykit/sandbox-host:{release}-{recipe_hash('host')}"


def recipe_hash(folder: str) -> str:
    digest = hashlib.sha256()
    for path in sorted((IMAGES_DIR / folder).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(IMAGES_DIR).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# Kept for the callers that mean "the image the app is built from".
BASE_IMAGE = base_image(APP_BASE_RELEASE)


def check_release(release: str, setting: str = "SANDBOX_RELEASE") -> str:
    if release not in RELEASES:
        known = ", ".join(RELEASES)
        raise SystemExit(f"sandbox: {setting}={release!r} is not a known release ({known})")
    return release


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(client: docker.DockerClient, release: str = APP_BASE_RELEASE) -> None:
    tag = base_image(release)
    if image_exists(client, tag):
        return
    try:
        client.images.pull("debian", tag=release)
    except docker.errors.APIError as error:
        log.info("debian:%s cannot be pulled (%s); building it with debootstrap", release, error)
        _debootstrap_base_image(client, release)
    else:
        _build(client, "base", tag, {"RELEASE": release})


def _debootstrap_base_image(client: docker.DockerClient, release: str) -> None:
    if shutil.which("debootstrap") is None:
        raise SystemExit(
            f"sandbox: debian:{release} cannot be pulled and debootstrap is not installed "
            "(apt-get install debootstrap)"
        )
    with tempfile.TemporaryDirectory(prefix=f"deploykit-rootfs-{release}-") as rootfs:
        log.info("debootstrap %s into %s (about a minute)", release, rootfs)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                release,
                rootfs,
                DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # The SDK wants the archive as a stream; tar keeps owners, modes and device nodes.
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        repository, tag = base_image(release).rsplit(":", 1)
        client.api.import_image_from_stream(
            tar.stdout, repository=repository, tag=tag, changes=['CMD ["/bin/bash"]']
        )
        if tar.wait() != 0:
            raise SystemExit("sandbox: tar of the debootstrap root file system failed")


def _build(client: docker.DockerClient, folder: str, tag: str, buildargs: dict[str, str]) -> None:
    log.info("building %s", tag)
    try:
        client.images.build(
            path=str(IMAGES_DIR / folder),
            tag=tag,
            buildargs=buildargs,
            labels={SANDBOX_LABEL + ".image": folder},
            rm=True,
        )
    except docker.errors.BuildError as error:
        lines = [chunk.get("stream", chunk.get("error", "")) for chunk in error.build_log]
        raise SystemExit(f"sandbox: building {tag} failed:\n{''.join(lines)[-3000:]}") from error


def ensure_images(
    client: docker.DockerClient, releases: Iterable[str] = (DEFAULT_RELEASE,), rebuild: bool = False
) -> None:
    """Build what is missing for hosts of these releases. The build cache makes a
    rebuild with no change quick."""
    ensure_base_image(client, APP_BASE_RELEASE)
    wanted = [("registry", REGISTRY_IMAGE, {"BASE_IMAGE": BASE_IMAGE})]
    for release in dict.fromkeys(releases):
        ensure_base_image(client, check_release(release))
        buildargs = {"BASE_IMAGE": base_image(release), "RELEASE": release}
        wanted.append(("host", host_image(release), buildargs))
    for folder, tag, buildargs in wanted:
        if rebuild or not image_exists(client, tag):
            _build(client, folder, tag, buildargs)
