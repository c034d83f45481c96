"""Docker command lines for the app + nginx pair of a release on a web host. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from .containers import (
    DIGEST_LABEL,
    RELEASE_LABEL,
    ROLE_LABEL,
    TAG_LABEL,
    label_field,
    label_value,
    release_labels,
    run_container,
)
from .images import Version
from .shell import q


@dataclass(frozen=True)
class Pair:
    """The app container and its nginx sidecar of one release on one host."""

    release: str
    tag: str
    # The app image's manifest digest ("" for a release from before pinning).
    digest: str = ""

    @property
    def version(self) -> Version:
        return Version(self.tag, self.digest)

    @property
    def app(self) -> str:
        return f"app-{self.release}"

    @property
    def nginx(self) -> str:
        return f"nginx-{self.release}"


def start_app(
    pair: Pair,
    image: str,
    network: str,
    env_file: str,
    stop_timeout_s: int,
    *,
    extra_flags: tuple[str, ...] = (),
) -> str:
    return run_container(
        pair.app,
        image,
        network=network,
        labels=release_labels("app", pair.tag, pair.release, pair.digest),
        env_file=env_file,
        stop_timeout_s=stop_timeout_s,
        extra_flags=extra_flags,
    )


# Where the nginx image looks for the host's certificate (tls.crt) and key (tls.key).
NGINX_TLS_DIR = "/etc/nginx/tls"


@dataclass(frozen=True)
class NginxTls:
    """nginx also serves TLS, on the host's `port`, with the certificate and key in the
    host's `folder` (mounted read-only)."""

    port: int
    folder: str


def start_nginx(
    pair: Pair,
    image: str,
    network: str,
    app_port: int,
    publish_port: int,
    tls: NginxTls | None = None,
    *,
    extra_flags: tuple[str, ...] = (),
) -> str:
    return run_container(
        pair.nginx,
        image,
        network=network,
        labels=release_labels("nginx", pair.tag, pair.release, pair.digest),
        env={"APP_UPSTREAM": f"{pair.app}:{app_port}"},
        publish=[f"{publish_port}:80", *([f"{tls.port}:443"] if tls else [])],
        volumes=[f"{tls.folder}:{NGINX_TLS_DIR}:ro"] if tls else None,
        extra_flags=extra_flags,
    )


def reload_nginx() -> str:
    """Every running nginx of the kit re-reads its configuration and certificate
    (SIGHUP: a graceful reload, open connections finish on the old workers)."""
    return (
        f"docker ps --quiet --filter label={ROLE_LABEL}=nginx"
        " | xargs --no-run-if-empty docker kill --signal HUP >/dev/null"
    )


def remove_release(release: str, timeout_s: float = 10) -> str:
    """Remove every container of a release, and keep at it until no `docker run` for it
    is still in flight: after a dropped SSH connection, the interrupted `docker run`
    can finish creating its container after a first removal."""
    label = f"{RELEASE_LABEL}={release}"
    # A `docker run` of this release still running. The [r] keeps pgrep from matching
    # this very script, whose command line holds the label too.
    in_flight = q(f"docke[r] run .*{RELEASE_LABEL}={release}")
    rounds = max(1, int(timeout_s / 0.25))
    return (
        f"for attempt in $(seq {rounds}); do "
        f"ids=$(docker ps -aq --filter label={q(label)}); "
        f'[ -z "$ids" ] || docker rm --force --volumes $ids >/dev/null; '
        f"if ! pgrep -f -- {in_flight} >/dev/null && "
        f'[ -z "$(docker ps -aq --filter label={q(label)})" ]; then exit 0; fi; '
        f"sleep 0.25; done; echo {q(f'containers of release {release} keep coming back')} >&2; "
        "exit 1"
    )


def list_pairs() -> str:
    """Every container of the kit on the host: role, tag, release, running state, digest
    ("-" when unpinned)."""
    template = (
        f'{{{{.Label "{ROLE_LABEL}"}}}} {{{{.Label "{TAG_LABEL}"}}}} '
        f'{{{{.Label "{RELEASE_LABEL}"}}}} {{{{.State}}}} {label_field(DIGEST_LABEL)}'
    )
    return f"docker ps --all --filter label={ROLE_LABEL} --format {q(template)}"


def parse_pairs(output: str) -> list[tuple[str, str, str, str, str]]:
    """(role, tag, release, state, digest) per container, in the order docker listed
    them; digest is "" for an unpinned release."""
    pairs = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            digest = label_value(fields[4]) if len(fields) >= 5 else ""
            pairs.append((*fields[:4], digest))
    return pairs
