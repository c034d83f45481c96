"""Docker command lines for accessories: long-running containers beside the app (a
search engine, a cache...) declared in group_data. Pure."""

from __future__ import annotations

from .containers import LABEL_PREFIX
from .shell import q

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
