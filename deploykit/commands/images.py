"""Images on a host: pulls and cleanup under one lock, and the release log, which says
which images a rollback may still need. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .shell import q

# Pulls and image cleanup take this lock on the host, so a cleanup never removes an
# image a concurrent pull (another deploy's pre-pull, a one-off) is bringing in. Its
# folder belongs to the deploy user, made at boot by tmpfiles.d (components/docker.py):
# in /run/lock (1777) any user could create the file first and block pulls, and one
# the deploy user created would block root's flock under fs.protected_regular.
IMAGES_LOCK = "/run/deploykit/images.lock"
IMAGES_LOCK_WAIT_S = 600

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Version:
    """What a roll deploys: the tag it was asked for and the manifest digest the tag
    pointed to when the roll was planned. Written ``TAG@sha256:HEX`` (in the release log,
    in labels read back); a version without a digest (a release from before pinning) is
    just ``TAG``. Hosts pull and run ``repository@digest``, so a tag pushed again while
    a roll runs changes nothing on them."""

    tag: str
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> "Version":
        tag, _, digest = text.strip().partition("@")
        return cls(tag, digest)

    def __str__(self) -> str:
        return f"{self.tag}@{self.digest}" if self.digest else self.tag

    @property
    def short(self) -> str:
        """For people: the tag and the digest's first 12 hex digits."""
        return f"{self.tag}@{self.digest[7:19]}" if self.digest else self.tag

    def image(self, repository: str) -> str:
        """What a host pulls and runs: by digest when pinned, else by tag."""
        return f"{repository}@{self.digest}" if self.digest else f"{repository}:{self.tag}"


def digest_tag(digest: str) -> str:
    """The local tag that names a pinned image on a host (``sha256-HEX``): an image
    pulled by digest has no tag, and `docker image prune` removes such images once no
    container uses them, even a release a rollback still needs."""
    if not _SHA256.match(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return digest.replace(":", "-")


def with_images_lock(command: str, wait_s: int = IMAGES_LOCK_WAIT_S) -> str:
    return f"flock --wait {int(wait_s)} {IMAGES_LOCK} sh -c {q(command)}"


def pull(image: str) -> str:
    """Pull under the images lock, so that a cleanup never runs while the pull does. An
    image pulled by digest also gets its local `digest_tag` (see there)."""
    repository, _, digest = image.partition("@")
    if not digest:
        return f"flock --wait {IMAGES_LOCK_WAIT_S} {IMAGES_LOCK} docker pull --quiet {q(image)}"
    local = f"{repository}:{digest_tag(digest)}"
    return with_images_lock(
        f"docker pull --quiet {q(image)} >/dev/null && docker tag {q(image)} {q(local)}"
    )


def prune_dangling_images() -> str:
    """Untagged images no container uses; Docker never removes a container or a volume
    here, nor an image any container (running or not) was created from."""
    return "docker image prune --force >/dev/null"


def record_release(release_log: str, version: Version) -> str:
    return f'mkdir -p "$(dirname {q(release_log)})" && echo {q(str(version))} >> {q(release_log)}'


def prune_images(app_image: str, release_log: str, keep: int) -> str:
    """Remove app images that are not among the last `keep` distinct releases: a pinned
    release (TAG@sha256:HEX in the log) keeps its image by its local digest tag, an
    unpinned one by its tag.

    Only images of the app's own repository are considered; anything else on the host
    (data containers, other images) is never touched."""
    # Without a readable log nothing is known to be old: remove nothing.
    return (
        f"[ -s {q(release_log)} ] || exit 0; "
        f"keep=$(tac {q(release_log)} | sed -e 's/^[^@]*@sha256:/sha256-/' | awk '!seen[$0]++' "
        f"| head -n {int(keep)} | tr '\\n' ' '); "
        f'[ -n "$keep" ] || exit 0; '
        f"docker image ls --format '{{{{.Tag}}}}' {q(app_image)} | while read -r tag; do "
        f'case " $keep " in *" $tag "*) ;; *) docker image rm {q(app_image)}:"$tag" '
        f">/dev/null 2>&1 || true ;; esac; done"
    )


def record_and_prune(release_log: str, version: Version, app_image: str, keep: int) -> str:
    """After a host's roll: log the release, then, under the images lock, make sure a
    pinned release's image has its digest tag (it may have been pulled by someone else),
    drop the app images no longer among the last `keep` releases and any dangling one."""
    cleanup = f"( {prune_images(app_image, release_log, keep)} ); {prune_dangling_images()}"
    if version.digest:
        pinned = version.image(app_image)
        local = f"{app_image}:{digest_tag(version.digest)}"
        cleanup = f"docker tag {q(pinned)} {q(local)}; {cleanup}"
    return f"{record_release(release_log, version)}; {with_images_lock(cleanup)}"
