"""Docker command lines for any container the kit runs: labels, run, stop, remove, and
the bounded waits on a container (an HTTP answer, a log line). Pure: no I/O.

Secrets never appear here: containers get their environment with ``--env-file`` (a
file only the deploy user can read), so `ps` on the host shows no value.
"""

from __future__ import annotations

from .shell import poll_until, q

LABEL_PREFIX = "io.deploykit"
ROLE_LABEL = f"{LABEL_PREFIX}.role"
TAG_LABEL = f"{LABEL_PREFIX}.tag"
RELEASE_LABEL = f"{LABEL_PREFIX}.release"
# The manifest digest the container's image was pulled by (sha256:...), when pinned.
DIGEST_LABEL = f"{LABEL_PREFIX}.digest"
# Exit status of a wait whose container stopped running.
CONTAINER_EXITED = 4


def run_container(
    name: str,
    image: str,
    *,
    network: str,
    labels: dict[str, str],
    env_file: str | None = None,
    env: dict[str, str] | None = None,
    publish: list[str] | None = None,
    volumes: list[str] | None = None,
    stop_timeout_s: int | None = None,
    command: list[str] | None = None,
    healthcheck: bool = True,
    extra_flags: tuple[str, ...] = (),
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
    for volume in volumes or []:
        parts.append(f"--volume {q(volume)}")
    # Hardening from the settings (capabilities, read-only root), as whole words.
    parts.extend(q(flag) for flag in extra_flags)
    parts.append(q(image))
    parts.extend(q(arg) for arg in command or [])
    return " ".join(parts)


def release_labels(role: str, tag: str, release: str, digest: str = "") -> dict[str, str]:
    """What the roll reads back from a container: its role, tag, release and digest."""
    labels = {ROLE_LABEL: role, TAG_LABEL: tag, RELEASE_LABEL: release}
    if digest:
        labels[DIGEST_LABEL] = digest
    return labels


# A label as a `docker ps --format` field that is never empty ("-" when unset), so
# that whitespace-split fields keep their places.
def label_field(label: str) -> str:
    return f'{{{{or (.Label "{label}") "-"}}}}'


def label_value(field: str) -> str:
    """A label_field read back: "" for the "-" of an unset label."""
    return "" if field == "-" else field


def running_versions(role: str = "app") -> str:
    """Print the version (TAG@DIGEST, or TAG when unpinned) of each running container of
    `role` on the host (none: nothing)."""
    template = f'{{{{.Label "{TAG_LABEL}"}}}}@{{{{.Label "{DIGEST_LABEL}"}}}}'
    return (
        f"docker ps --filter label={ROLE_LABEL}={role} --format {q(template)} 2>/dev/null"
        " | sed -e 's/@$//'"
    )


def stop(name: str, timeout_s: int) -> str:
    """SIGTERM (the image's STOPSIGNAL), then SIGKILL after timeout_s."""
    return f"docker stop --time {int(timeout_s)} {q(name)}"


def remove(*names: str) -> str:
    return "docker rm --force --volumes " + " ".join(q(name) for name in names)


def stop_and_remove(name: str, timeout_s: int) -> str:
    """Stop gracefully, then remove the container. Named volumes are kept (no --volumes)."""
    return f"docker stop --time {int(timeout_s)} {q(name)} >/dev/null; docker rm --force {q(name)}"


def start_existing(name: str) -> str:
    return f"docker start {q(name)}"


def list_release_containers() -> str:
    """Every container the deploys created (by role label): name, role, tag, status,
    digest, tab-separated."""
    template = (
        f'{{{{.Names}}}}\t{{{{.Label "{ROLE_LABEL}"}}}}\t{{{{.Label "{TAG_LABEL}"}}}}'
        f"\t{{{{.Status}}}}\t{label_field(DIGEST_LABEL)}"
    )
    return f"docker ps -a --filter label={ROLE_LABEL} --format {q(template)}"


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
            f"docker logs --tail 20 {q(container)} >&2; exit {CONTAINER_EXITED}; fi"
        )
    else:
        ip = exited = ""
        target = f"url={q(url)}; "
    return (
        ip
        + target
        + poll_until(
            '[ "$code" = 200 ]',
            observe='code=$(curl -s -o /dev/null -m 2 -w "%{http_code}" "$url")',
            give_up=exited,
            timed_out=f'echo "no 200 from $url within {timeout_s:g}s (last status $code)" >&2',
            timeout_s=timeout_s,
            poll_s=poll_s,
        )
    )


def wait_log_line(container: str, text: str, timeout_s: float, poll_s: float = 0.2) -> str:
    """Wait until the container, since its latest start, logs a line containing `text`;
    fail fast when it stops running, bounded. On failure its last log lines are printed,
    then the reason, last (the roll reports the last line)."""
    c = q(container)
    stopped = (
        f"if [ \"$(docker inspect -f '{{{{.State.Running}}}} {{{{.State.Restarting}}}}' {c})\" "
        f'!= "true false" ]; then '
        f"docker logs --tail 20 {c} >&2; "
        f"echo {q(f'container {container} stopped running (its last log lines above)')} >&2; "
        f"exit {CONTAINER_EXITED}; fi"
    )
    return f"since=$(docker inspect -f '{{{{.State.StartedAt}}}}' {c}) || exit 1; " + poll_until(
        f'docker logs --since "$since" {c} 2>&1 | grep -qF -- {q(text)}',
        give_up=stopped,
        timed_out=(
            f"docker logs --tail 20 {c} >&2; "
            f"echo {q(f'{container} logged no {text!r} within {timeout_s:g}s')} >&2"
        ),
        timeout_s=timeout_s,
        poll_s=poll_s,
    )
