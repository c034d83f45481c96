"""Images on a host: pulls and cleanup under one lock, and the release log, which says
which images a rollback may still need. Pure."""

from __future__ import annotations

from .shell import q

# Pulls and image cleanup take this lock on the host, so a cleanup never removes an
# image a concurrent pull (another deploy's pre-pull, a one-off) is bringing in. Its
# folder belongs to the deploy user, made at boot by tmpfiles.d (components/docker.py):
# in /run/lock (1777) any user could create the file first and block pulls, and one
# the deploy user created would block root's flock under fs.protected_regular.
IMAGES_LOCK = "/run/deploykit/images.lock"
IMAGES_LOCK_WAIT_S = 600


def with_images_lock(command: str, wait_s: int = IMAGES_LOCK_WAIT_S) -> str:
    return f"flock --wait {int(wait_s)} {IMAGES_LOCK} sh -c {q(command)}"


def pull(image: str) -> str:
    """Pull under the images lock, so that a cleanup never runs while the pull does."""
    return f"flock --wait {IMAGES_LOCK_WAIT_S} {IMAGES_LOCK} docker pull --quiet {q(image)}"


def prune_dangling_images() -> str:
    """Untagged images no container uses; Docker never removes a container or a volume
    here, nor an image any container (running or not) was created from."""
    return "docker image prune --force >/dev/null"


def record_release(release_log: str, tag: str) -> str:
    return f'mkdir -p "$(dirname {q(release_log)})" && echo {q(tag)} >> {q(release_log)}'


def prune_images(app_image: str, release_log: str, keep: int) -> str:
    """Remove app images whose tag is not among the last `keep` distinct releases.

    Only images of the app's own repository are considered; anything else on the host
    (data containers, other images) is never touched."""
    # Without a readable log nothing is known to be old: remove nothing.
    return (
        f"[ -s {q(release_log)} ] || exit 0; "
        f"keep=$(tac {q(release_log)} | awk '!seen[$0]++' | head -n {int(keep)} | tr '\\n' ' '); "
        f'[ -n "$keep" ] || exit 0; '
        f"docker image ls --format '{{{{.Tag}}}}' {q(app_image)} | while read -r tag; do "
        f'case " $keep " in *" $tag "*) ;; *) docker image rm {q(app_image)}:"$tag" '
        f">/dev/null 2>&1 || true ;; esac; done"
    )


def record_and_prune(release_log: str, tag: str, app_image: str, keep: int) -> str:
    """After a host's roll: log the release, then, under the images lock, drop the app
    images no longer among the last `keep` releases and any dangling image."""
    cleanup = f"( {prune_images(app_image, release_log, keep)} ); {prune_dangling_images()}"
    return f"{record_release(release_log, tag)}; {with_images_lock(cleanup)}"
