"""The workers' roll steps: on each job host, worker slot after worker slot, the old
worker stopped gracefully (SIGTERM: the job in hand finishes), replaced by the new
release's worker from the same app image, and checked ready before the next slot.
The engine (engine.py) runs them, one job host at a time.

No load balancer is involved: workers take jobs from Redis, so a stopped worker just
takes none. The old worker stops BEFORE the new one starts because both would use the
same processing list (the slot's WORKER_ID): a new worker re-queues what it finds
there, which would make the old one's job in hand run twice. When a new worker does
not come up, it is removed, the old one is started again, and the roll stops.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..commands.containers import remove, start_existing, stop, wait_log_line
from ..commands.images import Version
from ..commands.shell import timed
from ..commands.workers import WorkerContainer, list_workers, parse_workers, start_worker
from ..config import knob
from .engine import HostReport, Roll, RollSettings, StepFailed


@dataclass(frozen=True, kw_only=True)
class WorkerRollSettings(RollSettings):
    workers_per_host: int
    ready_timeout_s: float
    command: tuple[str, ...]
    ready_line: str

    @classmethod
    def from_data(cls, data, tag: str, **overrides) -> "WorkerRollSettings":
        """The workers' roll settings as a host's data sets them (else their defaults)."""
        return cls(
            **RollSettings.common_fields(data, tag, stop_timeout="jobs_stop_timeout_s"),
            # One job host at a time; a failed host stops the roll, the others stay.
            batch_size=1,
            rollback_on_failure=False,
            workers_per_host=knob(data, "jobs_workers_per_host"),
            ready_timeout_s=float(knob(data, "jobs_ready_timeout_s")),
            command=tuple(knob(data, "jobs_command")),
            ready_line=knob(data, "jobs_ready_line"),
            **overrides,
        )


@dataclass(frozen=True)
class WorkerSwap:
    old: WorkerContainer | None
    new: WorkerContainer


class WorkerRoll(Roll):
    PHASES = ("stop", "start", "ready", "cleanup")
    NAME = "WORKER ROLL"
    RESTORED = "{host}'s previous workers were started again."
    # Job hosts already done stay on the new release when a later one fails.
    ROLLBACK_KNOB = ""
    settings: WorkerRollSettings

    def describe(self, batches: list[list[str]]) -> str:
        settings = self.settings
        return (
            f"rolling workers to {settings.image} on {len(self.hosts)} job hosts, one at a "
            f"time, {settings.workers_per_host} per host: {', '.join(self.hosts)}"
        )

    # -- the steps the engine runs ------------------------------------------------------

    def inspect(self, host: str) -> list[tuple[WorkerContainer, str]]:
        result = self.run_command(host, list_workers())
        if not result.ok:
            raise StepFailed(f"cannot list worker containers: {result.reason()}")
        # Oldest release first, so the latest running one of a slot wins.
        return sorted(
            parse_workers(result.stdout), key=lambda item: item[0].release.rsplit("-", 1)[-1]
        )

    def old_version(self, before) -> Version | None:
        """The version of the lowest slot's running worker (the others' are replaced
        alike when they differ from the roll's)."""
        running = self._running(before)
        return running[min(running)].version if running else None

    def replacements(self, host: str, before) -> list[WorkerSwap]:
        settings = self.settings
        running = self._running(before)
        swaps = []
        for slot in range(1, settings.workers_per_host + 1):
            old = running.get(slot)
            if old is None or old.version != settings.version:
                new = WorkerContainer(slot, settings.release, settings.tag, settings.digest)
                swaps.append(WorkerSwap(old, new))
        return swaps

    def replace_steps(self, host: str, swap: WorkerSwap, report: HostReport):
        steps = []
        if swap.old is not None:
            steps.append(("stop", lambda: self.stop_old_worker(host, swap.old, report)))
        steps.append(("start", lambda: self.start_new_worker(host, swap.new, report)))
        steps.append(("ready", lambda: self.wait_ready(host, swap.new, report)))
        return steps

    def restore(self, host: str, swap: WorkerSwap, report: HostReport) -> None:
        """Remove the new worker and start the old one again."""
        old = swap.old
        self.fleet.log(
            f"{host}: new worker failed; returning to {old.name if old else 'no worker'}"
        )
        steps = [("remove the new worker", remove(swap.new.name))]
        if old is not None:
            steps += [
                ("start the old worker", start_existing(old.name)),
                ("check the old worker", self._ready_check(old), self.settings.ready_timeout_s),
            ]
        self.attempt(host, steps)

    def check_restored(self, host: str, swap: WorkerSwap, report: HostReport) -> str:
        """ "" when the slot's old worker runs again (or the slot had none) and the new one
        is gone; else what the host's Docker says of them."""
        states = {worker.name: state for worker, state in self.inspect(host)}
        problems = []
        if swap.old is not None and states.get(swap.old.name) != "running":
            problems.append(f"{swap.old.name} is {states.get(swap.old.name, 'gone')}")
        if swap.new.name in states:
            problems.append(f"{swap.new.name} is still there ({states[swap.new.name]})")
        return ", ".join(problems)

    def settle(self, host: str, before, report: HostReport) -> None:
        with self.phase(report, "cleanup"):
            self.retire(host, before, report)

    def retire(self, host: str, before, report: HostReport) -> None:
        """Only the current release's workers in slots 1..workers_per_host stay: old
        stopped ones go, and surplus slots (fewer workers than before) are stopped
        gracefully first."""
        settings = self.settings
        for worker, state in self.inspect(host):
            current = worker.version == settings.version
            if current and worker.slot <= settings.workers_per_host:
                if state == "running":
                    continue
            command = remove(worker.name)
            if state == "running":
                command = stop(worker.name, settings.stop_timeout_s) + " && " + command
            result = self.run_command(host, timed(command), waits_s=settings.stop_timeout_s)
            report.waited_s += result.waited_s
            if not result.ok:
                self.fleet.log(f"{host}: removing worker {worker.name} failed: {result.reason()}")

    # -- the workers' own steps -----------------------------------------------------------

    def stop_old_worker(self, host: str, old: WorkerContainer, report: HostReport) -> None:
        # SIGTERM: the worker takes no new job and exits once its job is done.
        self.must(
            host,
            timed(stop(old.name, self.settings.stop_timeout_s)),
            report,
            f"stop the old worker {old.name}",
            waits_s=self.settings.stop_timeout_s,
        )

    def start_new_worker(self, host: str, new: WorkerContainer, report: HostReport) -> None:
        settings = self.settings
        self.must(
            host,
            start_worker(
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

    def wait_ready(self, host: str, new: WorkerContainer, report: HostReport) -> None:
        self.must(
            host,
            self._ready_check(new),
            report,
            f"new worker {new.name} ready check",
            waits_s=self.settings.ready_timeout_s,
        )

    def _ready_check(self, worker: WorkerContainer) -> str:
        return wait_log_line(worker.name, self.settings.ready_line, self.settings.ready_timeout_s)

    @staticmethod
    def _running(before) -> dict[int, WorkerContainer]:
        return {worker.slot: worker for worker, state in before if state == "running"}
