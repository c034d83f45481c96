"""Docker command lines for the job workers on a job host. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from .containers import (
    LABEL_PREFIX,
    RELEASE_LABEL,
    ROLE_LABEL,
    TAG_LABEL,
    release_labels,
    run_container,
)
from .shell import q

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
            **release_labels(WORKER_ROLE, worker.tag, worker.release),
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
