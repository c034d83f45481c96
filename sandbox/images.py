"""Images the sandbox needs: a Debian 12 base, a VM-like host, and a registry.

The base image is built once and cached by tag. Where Docker Hub is reachable (a
laptop) it starts from ``debian:bookworm``; where it is not (CI, air-gapped build
machines) it is made with ``debootstrap`` and ``docker import``. Both paths give the
same contents: minbase plus ``BASE_PACKAGES``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors

log = logging.getLogger("sandbox")

IMAGES_DIR = Path(__file__).parent / "images"

BASE_IMAGE = "deploykit/sandbox-base:bookworm"
HOST_IMAGE = "deploykit/sandbox-host:bookworm"
REGISTRY_IMAGE = "deploykit/sandbox-registry:bookworm"

BASE_PACKAGES = ["python3", "ca-certificates", "curl", "iproute2", "procps"]
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SANDBOX_LABEL = "io.deploykit.sandbox"


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(client: docker.DockerClient) -> None:
    if image_exists(client, BASE_IMAGE):
        return
    try:
        client.images.pull("debian", tag="bookworm")
    except docker.errors.APIError as error:
        log.info("debian:bookworm cannot be pulled (%s); building it with debootstrap", error)
        _debootstrap_base_image(client)
    else:
        _build(client, "base", BASE_IMAGE)


def _debootstrap_base_image(client: docker.DockerClient) -> None:
    if shutil.which("debootstrap") is None:
        raise SystemExit(
            "sandbox: debian:bookworm cannot be pulled and debootstrap is not installed "
            "(apt-get install debootstrap)"
        )
    with tempfile.TemporaryDirectory(prefix="deploykit-rootfs-") as rootfs:
        log.info("debootstrap bookworm into %s (about a minute)", rootfs)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                rootfs,
                DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # The SDK wants the archive as a stream; tar keeps owners, modes and device nodes.
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        repository, tag = BASE_IMAGE.rsplit(":", 1)
        client.api.import_image_from_stream(
            tar.stdout, repository=repository, tag=tag, changes=['CMD ["/bin/bash"]']
        )
        if tar.wait() != 0:
            raise SystemExit("sandbox: tar of the debootstrap root file system failed")


def _build(client: docker.DockerClient, folder: str, tag: str) -> None:
    log.info("building %s", tag)
    try:
        client.images.build(
            path=str(IMAGES_DIR / folder),
            tag=tag,
            buildargs={"BASE_IMAGE": BASE_IMAGE},
            labels={SANDBOX_LABEL + ".image": folder},
            rm=True,
        )
    except docker.errors.BuildError as error:
        lines = [chunk.get("stream", chunk.get("error", "")) for chunk in error.build_log]
        raise SystemExit(f"sandbox: building {tag} failed:\n{''.join(lines)[-3000:]}") from error


def ensure_images(client: docker.DockerClient, rebuild: bool = False) -> None:
    """Build what is missing. The build cache makes a rebuild with no change quick."""
    ensure_base_image(client)
    for folder, tag in (("host", HOST_IMAGE), ("registry", REGISTRY_IMAGE)):
        if rebuild or not image_exists(client, tag):
            _build(client, folder, tag)
