"""Docker command lines for the job workers on a job host. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from .containers import (
    DIGEST_LABEL,
    LABEL_PREFIX,
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

SLOT_LABEL = f"{LABEL_PREFIX}.slot"
WORKER_ROLE = "worker"


@dataclass(frozen=True)
class WorkerContainer:
    """One job worker of one release in one slot (1..workers per host) on a job host."""

    slot: int
    release: str
    tag: str
    # The app image's manifest digest ("" for a release from before pinning).
    digest: str = ""

    @property
    def version(self) -> Version:
        return Version(self.tag, self.digest)

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
            **release_labels(WORKER_ROLE, worker.tag, worker.release, worker.digest),
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
    """Every job worker container on the host: slot, tag, release, running state, digest."""
    template = (
        f'{{{{.Label "{SLOT_LABEL}"}}}} {{{{.Label "{TAG_LABEL}"}}}} '
        f'{{{{.Label "{RELEASE_LABEL}"}}}} {{{{.State}}}} {label_field(DIGEST_LABEL)}'
    )
    return f"docker ps --all --filter label={ROLE_LABEL}={WORKER_ROLE} --format {q(template)}"


def parse_workers(output: str) -> list[tuple[WorkerContainer, str]]:
    """(worker, state) per container; lines without a numeric slot are not ours."""
    workers = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0].isdigit():
            digest = label_value(fields[4]) if len(fields) >= 5 else ""
            worker = WorkerContainer(int(fields[0]), fields[2], fields[1], digest)
            workers.append((worker, fields[3]))
    return workers
