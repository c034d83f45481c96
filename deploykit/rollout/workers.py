"""The job workers' roll: job hosts one after the other, each worker slot stopped
gracefully (SIGTERM: the job in hand finishes), replaced by the new release's worker
from the same app image, and checked before the next slot.

No load balancer is involved: workers take jobs from Redis, so a stopped worker just
takes none. The old worker stops BEFORE the new one starts because both would use the
same processing list (the slot's WORKER_ID): a new worker re-queues what it finds
there, which would make the old one's job in hand run twice. When a new worker does
not come up, it is removed, the old one is started again, and the roll stops.

Like the web roll (engine.py), it is plain Python over a `Fleet`, so the unit tests
replay it against a fake fleet and check the exact order of commands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..commands import docker as docker_commands
from ..commands.docker import WorkerContainer
from .engine import (
    Fleet,
    HostReport,
    RolloutFailed,
    SwapFailed,
    prune_images,
    record_release,
    timed,
)

PHASES = ("stop", "start", "ready", "cleanup")


@dataclass(frozen=True)
class WorkerRollSettings:
    app_image: str  # repository, without the tag: registry:5000/deploykit/app
    tag: str
    network: str
    env_file: str
    workers_per_host: int = 1
    stop_timeout_s: int = 60
    ready_timeout_s: float = 30
    command: tuple[str, ...] = ("python3", "/app/worker.py")
    ready_line: str = "worker ready"
    keep_releases: int = 3
    release_log: str = "/var/lib/deploykit/releases"
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))

    @property
    def image(self) -> str:
        return f"{self.app_image}:{self.tag}"

    @property
    def release(self) -> str:
        return f"{self.tag}-{self.run_id}"


class WorkerRoll:
    def __init__(
        self,
        fleet: Fleet,
        settings: WorkerRollSettings,
        job_hosts: list[str],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.fleet = fleet
        self.settings = settings
        self.job_hosts = job_hosts
        self.clock = clock
        self.reports: list[HostReport] = []
        # Set from a signal handler (Ctrl-C): the host in progress is finished first.
        self.stop_requested = False

    def run(self) -> list[HostReport]:
        settings = self.settings
        self.fleet.log(
            f"rolling workers to {settings.image} on {len(self.job_hosts)} job hosts, one at a "
            f"time, {settings.workers_per_host} per host: {', '.join(self.job_hosts)}"
        )
        for host in self.job_hosts:
            if self.stop_requested:
                raise RolloutFailed(
                    host, f"interrupted before this host; {self._done()}", self.reports, False
                )
            try:
                self.roll_host(host)
            except SwapFailed as failure:
                raise RolloutFailed(host, str(failure), self.reports) from None
        return self.reports

    def _done(self) -> str:
        done = [r.host for r in self.reports if r.result == "updated"]
        return f"hosts done (on {self.settings.tag}): {', '.join(done) or 'none'}"

    def roll_host(self, host: str) -> HostReport:
        settings = self.settings
        workers = self.inspect(host)
        running = {w.slot: w for w, state in workers if state == "running"}
        old_tags = sorted({w.tag for w in running.values()})
        report = HostReport(host, ",".join(old_tags) or None, settings.tag)
        self.reports.append(report)
        changed = False
        for slot in range(1, settings.workers_per_host + 1):
            old = running.get(slot)
            if old is not None and old.tag == settings.tag:
                continue  # a re-run after an interruption, or a host done by an earlier roll
            self._replace(host, slot, old, report)
            changed = True
        with self._phase(report, "cleanup"):
            self._remove_others(host, report)
            if changed:
                record = record_release(settings.release_log, settings.tag)
                prune = prune_images(
                    settings.app_image, settings.release_log, settings.keep_releases
                )
                self.fleet.run(host, f"{record}; ( {prune} )")
        report.result = "updated" if changed else "already on tag"
        self.fleet.log(
            f"{host}: workers {report.old_tag or '(none)'} -> {settings.tag} ({report.result}) "
            f"in {report.total_s:.1f}s"
        )
        return report

    def _replace(
        self, host: str, slot: int, old: WorkerContainer | None, report: HostReport
    ) -> None:
        settings = self.settings
        new = WorkerContainer(slot, settings.release, settings.tag)
        try:
            if old is not None:
                with self._phase(report, "stop"):
                    # SIGTERM: the worker takes no new job and exits once its job is done.
                    self._must(
                        host,
                        timed(docker_commands.stop(old.name, settings.stop_timeout_s)),
                        report,
                        f"stop the old worker {old.name}",
                    )
            with self._phase(report, "start"):
                self._must(
                    host,
                    docker_commands.start_worker(
                        new,
                        host,
                        settings.image,
                        network=settings.network,
                        env_file=settings.env_file,
                        stop_timeout_s=settings.stop_timeout_s,
                        command=list(settings.command),
                    ),
                    report,
                    f"start the new worker {new.name}",
                )
            with self._phase(report, "ready"):
                self._must(
                    host,
                    docker_commands.wait_log_line(
                        new.name, settings.ready_line, settings.ready_timeout_s
                    ),
                    report,
                    f"new worker {new.name} did not come up",
                )
        except SwapFailed as failure:
            self._restore(host, new, old)
            report.result = f"failed: {failure}"
            raise

    def _restore(self, host: str, new: WorkerContainer, old: WorkerContainer | None) -> None:
        """Remove the new worker and start the old one again; each failed step is said."""
        self.fleet.log(
            f"{host}: new worker failed; returning to {old.name if old else 'no worker'}"
        )
        steps = [("remove the new worker", docker_commands.remove(new.name))]
        if old is not None:
            steps += [
                ("start the old worker", docker_commands.start_existing(old.name)),
                (
                    "check the old worker",
                    docker_commands.wait_log_line(
                        old.name, self.settings.ready_line, self.settings.ready_timeout_s
                    ),
                ),
            ]
        for what, command in steps:
            result = self.fleet.run(host, command)
            if not result.ok:
                self.fleet.log(f"{host}: while restoring, could not {what}: {result.reason()}")

    def _remove_others(self, host: str, report: HostReport) -> None:
        """Only the current release's workers in slots 1..workers_per_host stay: old
        stopped ones go, and surplus slots (fewer workers than before) are stopped
        gracefully first."""
        settings = self.settings
        for worker, state in self.inspect(host):
            if worker.tag == settings.tag and worker.slot <= settings.workers_per_host:
                if state == "running":
                    continue
            command = docker_commands.remove(worker.name)
            if state == "running":
                command = (
                    docker_commands.stop(worker.name, settings.stop_timeout_s) + " && " + command
                )
            result = self.fleet.run(host, timed(command))
            report.waited_s += result.waited_s
            if not result.ok:
                self.fleet.log(f"{host}: removing worker {worker.name} failed: {result.reason()}")

    def inspect(self, host: str) -> list[tuple[WorkerContainer, str]]:
        result = self.fleet.run(host, docker_commands.list_workers())
        if not result.ok:
            raise SwapFailed(f"cannot list worker containers: {result.reason()}")
        # Oldest release first, so the latest running one of a slot wins.
        return sorted(
            docker_commands.parse_workers(result.stdout),
            key=lambda item: item[0].release.rsplit("-", 1)[-1],
        )

    def _must(self, host: str, command: str, report: HostReport, what: str):
        result = self.fleet.run(host, command)
        report.waited_s += result.waited_s
        if not result.ok:
            raise SwapFailed(f"{what}: {result.reason()}")
        return result

    def _phase(self, report: HostReport, name: str):
        roll = self

        class _Timer:
            def __enter__(self):
                self.start = roll.clock()

            def __exit__(self, *exc):
                report.phases[name] = report.phases.get(name, 0.0) + roll.clock() - self.start
                return False

        return _Timer()
