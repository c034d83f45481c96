"""Docker command lines for the app + nginx pair on a web host. Pure: no I/O.

Secrets never appear here: containers get their environment with ``--env-file`` (a
file only the deploy user can read), so `ps` on the host shows no value.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .haproxy import TIMED_OUT

LABEL_PREFIX = "io.deploykit"
ROLE_LABEL = f"{LABEL_PREFIX}.role"
TAG_LABEL = f"{LABEL_PREFIX}.tag"
RELEASE_LABEL = f"{LABEL_PREFIX}.release"
# Exit status of a health wait whose container stopped running.
CONTAINER_EXITED = 4


@dataclass(frozen=True)
class Pair:
    """The app container and its nginx sidecar of one release on one host."""

    release: str
    tag: str

    @property
    def app(self) -> str:
        return f"app-{self.release}"

    @property
    def nginx(self) -> str:
        return f"nginx-{self.release}"


def q(value: object) -> str:
    return shlex.quote(str(value))


def run_container(
    name: str,
    image: str,
    *,
    network: str,
    labels: dict[str, str],
    env_file: str | None = None,
    env: dict[str, str] | None = None,
    publish: list[str] | None = None,
    stop_timeout_s: int | None = None,
    command: list[str] | None = None,
    healthcheck: bool = True,
) -> str:
    parts = ["docker run --detach", f"--name {q(name)}", f"--network {q(network)}"]
    parts.append("--restart unless-stopped")
    if not healthcheck:
        parts.append("--no-healthcheck")
    if stop_timeout_s is not None:
        parts.append(f"--stop-timeout {int(stop_timeout_s)}")
    if env_file:
        parts.append(f"--env-file {q(env_file)}")
    # Non-secret, per-container values only (an upstream name, a release id).
    for key, value in (env or {}).items():
        parts.append(f"--env {q(f'{key}={value}')}")
    for key, value in labels.items():
        parts.append(f"--label {q(f'{key}={value}')}")
    for mapping in publish or []:
        parts.append(f"--publish {q(mapping)}")
    parts.append(q(image))
    parts.extend(q(arg) for arg in command or [])
    return " ".join(parts)


def pair_labels(pair: Pair, role: str) -> dict[str, str]:
    return {ROLE_LABEL: role, TAG_LABEL: pair.tag, RELEASE_LABEL: pair.release}


def start_app(pair: Pair, image: str, network: str, env_file: str, stop_timeout_s: int) -> str:
    return run_container(
        pair.app,
        image,
        network=network,
        labels=pair_labels(pair, "app"),
        env_file=env_file,
        stop_timeout_s=stop_timeout_s,
    )


def start_nginx(pair: Pair, image: str, network: str, app_port: int, publish_port: int) -> str:
    return run_container(
        pair.nginx,
        image,
        network=network,
        labels=pair_labels(pair, "nginx"),
        env={"APP_UPSTREAM": f"{pair.app}:{app_port}"},
        publish=[f"{publish_port}:80"],
    )


def stop(name: str, timeout_s: int) -> str:
    """SIGTERM (the image's STOPSIGNAL), then SIGKILL after timeout_s."""
    return f"docker stop --time {int(timeout_s)} {q(name)}"


def remove(*names: str) -> str:
    return "docker rm --force --volumes " + " ".join(q(name) for name in names)


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


def start_existing(name: str) -> str:
    return f"docker start {q(name)}"


def list_pairs() -> str:
    """Every container of the kit on the host: role, tag, release, running state."""
    template = (
        f'{{{{.Label "{ROLE_LABEL}"}}}} {{{{.Label "{TAG_LABEL}"}}}} '
        f'{{{{.Label "{RELEASE_LABEL}"}}}} {{{{.State}}}}'
    )
    return f"docker ps --all --filter label={ROLE_LABEL} --format {q(template)}"


def parse_pairs(output: str) -> list[tuple[str, str, str, str]]:
    """(role, tag, release, state) per container, in the order docker listed them."""
    return [tuple(line.split()[:4]) for line in output.splitlines() if len(line.split()) >= 4]


def wait_http_ok(url: str, timeout_s: float, container: str | None = None, poll_s=0.1) -> str:
    """Poll `url` on the host until it answers 200, bounded; fail fast if the container
    it depends on has exited (its last log lines are printed).

    With `container`, the text CONTAINER_IP in `url` becomes that container's address.
    """
    if container:
        before, placeholder, after = url.partition("CONTAINER_IP")
        ip = (
            f"ip=$(docker inspect -f '{{{{range .NetworkSettings.Networks}}}}"
            f"{{{{.IPAddress}}}}{{{{end}}}}' {q(container)}); "
        )
        target = f'url={q(before)}"$ip"{q(after)}; ' if placeholder else f"url={q(url)}; "
        exited = (
            f'if [ "$(docker inspect -f "{{{{.State.Running}}}}" {q(container)})" != true ]; then '
            f"echo {q(f'container {container} exited:')} >&2; "
            f"docker logs --tail 20 {q(container)} >&2; exit {CONTAINER_EXITED}; fi; "
        )
    else:
        ip = exited = ""
        target = f"url={q(url)}; "
    return (
        f"{ip}{target}start=$(date +%s%N); "
        f"deadline=$((start + {int(timeout_s * 1000)} * 1000000)); "
        f'while :; do code=$(curl -s -o /dev/null -m 2 -w "%{{http_code}}" "$url"); '
        f'if [ "$code" = 200 ]; then echo waited_ms=$((($(date +%s%N) - start) / 1000000)); '
        f"exit 0; fi; {exited}"
        f'if [ "$(date +%s%N)" -ge "$deadline" ]; then '
        f'echo "no 200 from $url within {timeout_s:g}s (last status $code)" >&2; '
        f"exit {TIMED_OUT}; fi; sleep {poll_s:g}; done"
    )


# Pulls and image cleanup take this lock on the host, so a cleanup never removes an
# image a concurrent pull (another deploy's pre-pull, a one-off) is bringing in.
IMAGES_LOCK = "/run/lock/deploykit-images.lock"


def with_images_lock(command: str, wait_s: int = 600) -> str:
    return f"flock --wait {int(wait_s)} {IMAGES_LOCK} sh -c {q(command)}"


def prune_dangling_images() -> str:
    """Untagged images no container uses; Docker never removes a container or a volume
    here, nor an image any container (running or not) was created from."""
    return "docker image prune --force >/dev/null"


def pull(image: str) -> str:
    return f"docker pull --quiet {q(image)}"


def image_exists(image: str) -> str:
    return f"docker image inspect --format '{{{{.Id}}}}' {q(image)} >/dev/null 2>&1"


# -- one-off commands and consoles --------------------------------------------------------

# One-off containers carry this label (not ROLE_LABEL: the roll reads every container
# with a role as part of a release), so `docker ps --filter label=...` finds a stray one.
ONEOFF_LABEL = f"{LABEL_PREFIX}.oneoff"
# The line a one-off script prints last, with the command's exit status.
ONEOFF_EXIT_MARKER = "deploykit: one-off exited with status "


def running_app_tag(role: str = "app") -> str:
    """Print the tag of each running container of `role` on the host (none: nothing)."""
    return f"docker ps --filter label={ROLE_LABEL}={role} --format '{{{{.Label \"{TAG_LABEL}\"}}}}'"


def run_oneoff(
    image: str,
    command: list[str],
    *,
    network: str,
    env_file: str,
    purpose: str = "oneoff",
) -> str:
    """A throwaway container of the app image running `command` (an argv, each word
    quoted) with the app's env file and network; removed when it exits.

    The environment comes only from the env file: nothing secret is on the command line.
    """
    return _run_removed(q(image), command, network, env_file, purpose, [])


def _run_removed(
    image_word: str,
    command: list[str],
    network: str,
    env_file: str,
    purpose: str,
    flags: list[str],
) -> str:
    parts = ["docker run --rm", *flags]
    parts += [
        f"--env-file {q(env_file)}",
        f"--network {q(network)}",
        f"--label {q(f'{ONEOFF_LABEL}={purpose}')}",
        image_word,
    ]
    parts.extend(q(arg) for arg in command)
    return " ".join(parts)


def report_exit_status(command: str) -> str:
    """Run `command`, then print its exit status on a last line of its own and exit with
    it (pyinfra's connector reports success or failure only)."""
    return f'{command}; status=$?; echo "{ONEOFF_EXIT_MARKER}$status"; exit $status'


def parse_exit_status(output: str) -> int | None:
    """The status `report_exit_status` printed, or None if the script never got there."""
    lines = [line for line in output.splitlines() if line.startswith(ONEOFF_EXIT_MARKER)]
    if not lines:
        return None
    return int(lines[-1].removeprefix(ONEOFF_EXIT_MARKER).strip())


def console(
    image_repository: str,
    command: list[str],
    *,
    network: str,
    env_file: str,
    tag: str | None = None,
    tty: bool = True,
) -> str:
    """The remote script of `bin/console`: a container of the tag the host runs (or
    `tag`), attached to the caller's terminal; `exec` so the container gets the signals."""
    if tag:
        resolve = ""
        image = q(f"{image_repository}:{tag}")
    else:
        missing = q("deploykit: no app or worker container runs on this host; give --tag TAG")
        # A web host runs the app; a job host runs workers of the same image.
        resolve = (
            f"tag=$({running_app_tag()} 2>/dev/null | tail -n 1); "
            f'[ -n "$tag" ] || tag=$({running_app_tag(WORKER_ROLE)} 2>/dev/null | tail -n 1); '
            f'if [ -z "$tag" ]; then echo {missing} >&2; exit 1; fi; '
        )
        image = f'{q(image_repository)}:"$tag"'
    flags = ["--interactive", "--tty"] if tty else ["--interactive"]
    return f"{resolve}exec {_run_removed(image, command, network, env_file, 'console', flags)}"


# -- accessories --------------------------------------------------------------------------

ACCESSORY_LABEL = f"{LABEL_PREFIX}.accessory"
# A hash of the accessory's declared spec: a different hash means recreate.
ACCESSORY_SPEC_LABEL = f"{LABEL_PREFIX}.accessory.spec"


def accessory_container_name(accessory: str) -> str:
    return f"accessory-{accessory}"


def run_accessory(
    accessory: str,
    image: str,
    *,
    spec_hash: str,
    env_file: str,
    ports: list[str],
    volumes: list[str],
    command: list[str],
) -> str:
    """A long-running accessory container; its labels name it and its spec's hash."""
    parts = [
        "docker run --detach",
        f"--name {q(accessory_container_name(accessory))}",
        "--restart unless-stopped",
        f"--env-file {q(env_file)}",
        f"--label {q(f'{ACCESSORY_LABEL}={accessory}')}",
        f"--label {q(f'{ACCESSORY_SPEC_LABEL}={spec_hash}')}",
    ]
    parts += [f"--publish {q(mapping)}" for mapping in ports]
    parts += [f"--volume {q(mapping)}" for mapping in volumes]
    parts.append(q(image))
    parts.extend(q(arg) for arg in command)
    return " ".join(parts)


def list_accessories() -> str:
    """Every accessory container on the host: name, accessory, spec hash, state."""
    template = (
        f'{{{{.Names}}}} {{{{.Label "{ACCESSORY_LABEL}"}}}} '
        f'{{{{.Label "{ACCESSORY_SPEC_LABEL}"}}}} {{{{.State}}}}'
    )
    return f"docker ps --all --filter label={ACCESSORY_LABEL} --format {q(template)}"


def stop_and_remove(name: str, timeout_s: int) -> str:
    """Stop gracefully, then remove the container. Named volumes are kept (no --volumes)."""
    return f"docker stop --time {int(timeout_s)} {q(name)} >/dev/null; docker rm --force {q(name)}"


# -- job workers ----------------------------------------------------------------------------

SLOT_LABEL = f"{LABEL_PREFIX}.slot"
WORKER_ROLE = "worker"


@dataclass(frozen=True)
class WorkerContainer:
    """One job worker of one release in one slot (1..workers per host) on a job host."""

    slot: int
    release: str
    tag: str

    @property
    def name(self) -> str:
        return f"worker-{self.slot}-{self.release}"

    def worker_id(self, host: str) -> str:
        """Stable per host and slot, across releases: the worker names its processing
        list after it, so a replacement recovers what its predecessor left there."""
        return f"{host}-{self.slot}"


def start_worker(
    worker: WorkerContainer,
    host: str,
    image: str,
    *,
    network: str,
    env_file: str,
    stop_timeout_s: int,
    command: list[str],
) -> str:
    return run_container(
        worker.name,
        image,
        network=network,
        labels={
            ROLE_LABEL: WORKER_ROLE,
            TAG_LABEL: worker.tag,
            RELEASE_LABEL: worker.release,
            SLOT_LABEL: str(worker.slot),
        },
        env_file=env_file,
        env={"WORKER_ID": worker.worker_id(host)},
        stop_timeout_s=stop_timeout_s,
        command=command,
        # The image's HEALTHCHECK polls the web server, which a worker does not run.
        healthcheck=False,
    )


def list_workers() -> str:
    """Every job worker container on the host: slot, tag, release, running state."""
    template = (
        f'{{{{.Label "{SLOT_LABEL}"}}}} {{{{.Label "{TAG_LABEL}"}}}} '
        f'{{{{.Label "{RELEASE_LABEL}"}}}} {{{{.State}}}}'
    )
    return f"docker ps --all --filter label={ROLE_LABEL}={WORKER_ROLE} --format {q(template)}"


def parse_workers(output: str) -> list[tuple[WorkerContainer, str]]:
    """(worker, state) per container; lines without a numeric slot are not ours."""
    workers = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0].isdigit():
            workers.append((WorkerContainer(int(fields[0]), fields[2], fields[1]), fields[3]))
    return workers


def wait_log_line(container: str, text: str, timeout_s: float, poll_s: float = 0.2) -> str:
    """Wait until the container, since its latest start, logs a line containing `text`;
    fail fast when it stops running, bounded. On failure its last log lines are printed,
    then the reason, last (the roll reports the last line)."""
    c = q(container)
    return (
        f"since=$(docker inspect -f '{{{{.State.StartedAt}}}}' {c}) || exit 1; "
        f"start=$(date +%s%N); deadline=$((start + {int(timeout_s * 1000)} * 1000000)); "
        f"while :; do "
        f'if docker logs --since "$since" {c} 2>&1 | grep -qF -- {q(text)}; then '
        f"echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 0; fi; "
        f"if [ \"$(docker inspect -f '{{{{.State.Running}}}} {{{{.State.Restarting}}}}' {c})\" "
        f'!= "true false" ]; then '
        f"docker logs --tail 20 {c} >&2; "
        f"echo {q(f'container {container} stopped running (its last log lines above)')} >&2; "
        f"exit {CONTAINER_EXITED}; fi; "
        f'if [ "$(date +%s%N)" -ge "$deadline" ]; then '
        f"docker logs --tail 20 {c} >&2; "
        f"echo {q(f'{container} logged no {text!r} within {timeout_s:g}s')} >&2; "
        f"exit {TIMED_OUT}; fi; sleep {poll_s:g}; done"
    )
