"""The roll engine: the hosts of one role, batch by batch, each host's old release
replaced by the new one and checked before the next batch starts. What a replacement
is comes from the role: the web roll (web.py) drains the host on every load balancer
and swaps its app + nginx pair; the workers' roll (workers.py) stops each worker
gracefully and waits for its successor to be ready. The order, the phases and their
timing, the failures and what they restore, Ctrl-C, rollback of the hosts already
done and the report are the engine's, written once here.

Why an engine of its own, driven from ONE pyinfra callback, instead of pyinfra
operations per host (docs/architecture.md):
- pyinfra plans every operation for every host before running any, and runs each
  operation on all hosts at once; `--serial` goes host by host but in set order, with
  no batches, and does not stop at the first failure;
- there is no `delegate_to`: a web host's swap needs LB actions in the middle of it;
- what happens next depends on what just happened (a failed health check means going
  back to the old release), which a precomputed plan cannot express.
So a roll is plain Python over pyinfra's own SSH connections: the order is a list,
failures are exceptions, and `Fleet` is the only thing that touches hosts, which is
what lets the unit tests replay a roll against a fake fleet and check its exact order.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Protocol, TypeVar

from ..commands.images import IMAGES_LOCK_WAIT_S, Version, record_and_prune
from ..config import knob
from .plan import plan_batches

T = TypeVar("T")
WAITED = re.compile(r"waited_ms=(\d+)")


@dataclass
class CommandResult:
    # None when the command never ran to completion (SSH dropped, host gone).
    exit_code: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def waited_s(self) -> float:
        """Time the command itself reported spending waiting on the host."""
        return sum(int(ms) for ms in WAITED.findall(self.stdout)) / 1000

    def reason(self) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        detail = text[-1] if text else "no output"
        if self.exit_code is None:
            return f"connection lost ({detail})"
        return f"exit {self.exit_code}: {detail}"


class Fleet(Protocol):
    """Runs commands on hosts by name. The real one wraps pyinfra's connections."""

    def run(
        self, host: str, command: str, sudo: bool = False, limit_s: float | None = None
    ) -> CommandResult:
        """`limit_s`: the command is killed ON THE HOST past it (commands/shell.time_limit),
        so a hung dockerd costs a step its limit."""

    def parallel(self, calls: list[Callable[[], T]]) -> list[T]:
        """Run the calls at once; return their results in order. When one raises, the
        others still run to their end: the first error goes up only once all are done."""

    def background(self, call: Callable[[], T]) -> Callable[[], T]:
        """Start `call` now, beside whatever runs next; the function returned waits for
        it to end, then returns its value or raises its error."""

    def log(self, message: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class RollSettings:
    """What every roll needs; each role's settings add their own (web.py, workers.py).
    Built from host data by rollout/requests.py: the defaults are the documented ones
    (rollout/settings.py, components/*), not repeated here."""

    app_image: str  # repository, without the tag: registry:5000/deploykit/app
    tag: str
    network: str
    env_file: str
    # Seconds a stopping container gets to finish its work (SIGTERM, then SIGKILL).
    stop_timeout_s: int
    # Longest a command may run on a host beyond its own waits; then it is killed there.
    command_timeout_s: float
    batch_size: object
    rollback_on_failure: bool
    keep_releases: int
    release_log: str
    # The manifest digest the tag pointed to when the roll was planned (sha256:...):
    # every host runs exactly it, whatever the tag points to later. "" only where no
    # registry was asked (unit tests).
    digest: str = ""
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))

    @staticmethod
    def common_fields(data, tag: str, stop_timeout: str) -> dict:
        """The fields every role reads alike from a host's data; `stop_timeout` names
        the role's own knob for it."""
        return dict(
            app_image=data.get("app_image"),
            tag=tag,
            network=knob(data, "app_network"),
            env_file=knob(data, "app_env_file"),
            stop_timeout_s=int(knob(data, stop_timeout)),
            command_timeout_s=float(knob(data, "rollout_command_timeout_s")),
            keep_releases=int(knob(data, "rollout_keep_releases")),
            release_log=knob(data, "app_release_log"),
        )

    @property
    def version(self) -> Version:
        return Version(self.tag, self.digest)

    @property
    def image(self) -> str:
        """What the hosts pull and run: repository@digest (repository:tag unpinned)."""
        return self.version.image(self.app_image)

    @property
    def release(self) -> str:
        """The name of this run's containers: a re-run of a tag makes new ones."""
        return f"{self.tag}-{self.run_id}"


@dataclass
class HostReport:
    host: str
    # What the host ran before the roll (None: nothing) and what it was rolled to.
    old_version: Version | None
    new_version: Version
    phases: dict[str, float] = field(default_factory=dict)
    waited_s: float = 0.0
    result: str = "pending"
    # After a failed restore: why the host is not back in service, as read back from the
    # hosts (every LB's view of it, for a web host); "" when it is.
    stranded: str = ""

    @property
    def total_s(self) -> float:
        return sum(self.phases.values())

    @property
    def overhead_s(self) -> float:
        """Wall time not spent waiting on HAProxy or containers: SSH, the tool itself."""
        return max(0.0, self.total_s - self.waited_s)


class RolloutFailed(Exception):
    def __init__(self, host: str, reason: str, reports: list[HostReport], touched=True):
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason
        self.reports = reports
        # False when the roll stopped before changing this host at all.
        self.touched = touched


class StepFailed(Exception):
    """A step of a host's replacement failed; the host is back on its old release."""


def describe(error: BaseException) -> str:
    """A step's failure as its message; any other error with its type (a bug, an
    interrupt, a timeout), which its message alone may not say (KeyboardInterrupt has
    none)."""
    if isinstance(error, StepFailed):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class Roll:
    """Rolls `hosts` in batches (the first host alone); a role subclass supplies the
    steps: `inspect`, `replacements`, `replace_steps`, `restore`, `settle`, `retire`."""

    # The phases of a host, in the order of the summary table.
    PHASES: tuple[str, ...] = ()
    # How the operator reads this roll in messages: "ROLL STOPPED at web2".
    NAME = "ROLL"
    # What a failed host is left as ({host}).
    RESTORED = "{host} is back on its previous release."
    # The knob that has the hosts already done rolled back too when one fails.
    ROLLBACK_KNOB = "rollout_rollback_on_failure"

    def __init__(
        self,
        fleet: Fleet,
        settings: RollSettings,
        hosts: list[str],
        lb_hosts: list[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.fleet = fleet
        self.settings = settings
        self.hosts = hosts
        self.lb_hosts = list(lb_hosts)
        self.clock = clock
        self.reports: list[HostReport] = []
        # Set from a signal handler (Ctrl-C): the host in progress is finished, never
        # abandoned half-done, and the roll stops before the next batch.
        self.stop_requested = False
        # Why the hosts in progress must go back now, at their next step (a second
        # Ctrl-C; another host of the batch failed with an error that is not a step's).
        self.stop_now: str | None = None
        # The cleanups of the hosts done (old release stopped and removed, release
        # recorded, images pruned): off the critical path, they run beside the next
        # hosts' swaps, and every one has ended before the roll returns or raises.
        self.pending_cleanups: list[Callable[[], None]] = []
        # The first error a cleanup raised (a bug, an interrupt): the roll stops, and it
        # goes up unchanged, as it would have from the host's own steps.
        self.cleanup_error: BaseException | None = None

    # -- the roll ---------------------------------------------------------------------

    def run(self) -> list[HostReport]:
        try:
            self._run_batches()
        except BaseException:
            self._finish_cleanups(raise_error=False)
            raise
        self._finish_cleanups(raise_error=True)
        return self.reports

    def _run_batches(self) -> None:
        batches = plan_batches(self.hosts, self.settings.batch_size)
        self.fleet.log(self.describe(batches))
        for batch in batches:
            if self.cleanup_error is not None:
                raise self.cleanup_error
            if self.stop_requested or self.stop_now:
                raise RolloutFailed(
                    batch[0],
                    f"interrupted before this host; hosts done (on {self.settings.version.short}): "
                    f"{', '.join(self.done()) or 'none'}",
                    self.reports,
                    touched=False,
                )
            # Any error that is not a step's failure goes up from here, once every host
            # of the batch is back or done (_roll_host_safely).
            outcomes = self.fleet.parallel([lambda h=h: self._roll_host_safely(h) for h in batch])
            failures = [(host, reason) for host, reason in outcomes if reason]
            if failures:
                host, reason = failures[0]
                # A rollback of a host done must not meet that host's own cleanup.
                self._finish_cleanups(raise_error=False)
                if self.cleanup_error is not None:
                    # The hosts in progress went back because of it (stop_now).
                    raise self.cleanup_error
                self._after_failure()
                raise RolloutFailed(host, reason, self.reports)

    def _finish_cleanups(self, raise_error: bool) -> None:
        """Wait for every cleanup started; one that raised (a bug: their commands' own
        failures are only said) is said, and raised with `raise_error` once all ended."""
        first: BaseException | None = None
        while self.pending_cleanups:
            wait = self.pending_cleanups.pop(0)
            try:
                wait()
            except BaseException as error:  # noqa: BLE001 (said; raised below)
                self.fleet.log(f"a cleanup failed: {describe(error)}")
                first = first or error
        if first is not None and raise_error:
            raise first

    def describe(self, batches: list[list[str]]) -> str:
        return (
            f"rolling {self.settings.image} to {len(self.hosts)} hosts in "
            f"{len(batches)} batches: " + " | ".join(", ".join(b) for b in batches)
        )

    def done(self) -> list[str]:
        return [r.host for r in self.reports if r.result == "updated"]

    def _roll_host_safely(self, host: str) -> tuple[str, str | None]:
        try:
            self.roll_host(host)
        except StepFailed as failure:
            return host, str(failure)
        except BaseException as error:
            # Not a step's failure: a bug, an interrupt, a timeout. This host went back
            # (_replace), or had not been changed yet, or already served its new release
            # (cleanup); the others of its batch go back at their next step, then the
            # error goes up, unchanged.
            self.stop_now = self.stop_now or f"{host} failed with {describe(error)}"
            raise
        return host, None

    def roll_host(self, host: str) -> HostReport:
        """Read what the host runs; replace what is not on the version, each replacement
        checked and restored on failure; retire the old release and record the new."""
        before = self.inspect(host)
        report = HostReport(host, self.old_version(before), self.settings.version)
        self.reports.append(report)
        replacements = self.replacements(host, before)
        if not replacements:
            # Already on the version (a re-run after an interruption, or a host done by an
            # earlier roll): only what an interrupted roll left is put right.
            self.settle(host, before, report)
            report.result = "already on this release"
        else:
            for replacement in replacements:
                self._replace(host, replacement, report)
            # The host serves its new release: the next host need not wait for this.
            report.result = "updated"
            self.pending_cleanups.append(
                self.fleet.background(lambda: self._clean_up(host, before, report))
            )
            return report
        self._say_done(report)
        return report

    def _clean_up(self, host: str, before, report: HostReport) -> None:
        try:
            self._retire_and_record(host, before, report)
        except BaseException as error:
            # The hosts in progress go back at their next step; the roll stops.
            self.stop_now = self.stop_now or f"{host}'s cleanup failed with {describe(error)}"
            self.cleanup_error = self.cleanup_error or error
            raise

    def _retire_and_record(self, host: str, before, report: HostReport) -> None:
        with self.phase(report, "cleanup"):
            self.retire(host, before, report)
            # It may wait its turn for the images lock (a concurrent pull): the host
            # already serves its new release meanwhile.
            recorded = self.run_command(host, self._record_and_prune(), waits_s=IMAGES_LOCK_WAIT_S)
            if not recorded.ok:
                self.fleet.log(
                    f"{host}: recording the release and pruning images failed: {recorded.reason()}"
                )
        self._say_done(report)

    def _say_done(self, report: HostReport) -> None:
        self.fleet.log(
            f"{report.host}: "
            f"{report.old_version.short if report.old_version else '(none)'} -> "
            f"{report.new_version.short}: {report.result} in "
            f"{report.total_s:.1f}s ({_format_phases(report.phases)}; "
            f"overhead {report.overhead_s:.2f}s)"
        )

    def _replace(self, host: str, replacement, report: HostReport) -> None:
        """Run the steps; on ANY error (a step's failure, a bug, Ctrl-C, a timeout) put
        the host back on its old release, then let the error go up."""
        try:
            for name, step in self.replace_steps(host, replacement, report):
                if self.stop_now:
                    raise StepFailed(f"stopped before {name}: {self.stop_now}")
                with self.phase(report, name):
                    step()
        except BaseException as error:
            report.result = f"failed: {describe(error)}"
            if not isinstance(error, StepFailed):
                # The others of the batch go back too, at their next step (the error
                # goes up once they are back: _roll_host_safely).
                self.stop_now = self.stop_now or f"{host} failed with {describe(error)}"
            self._restore(host, replacement, report)
            raise

    def _restore(self, host: str, replacement, report: HostReport) -> None:
        """Restore, then read back what the host really is: an operator is never told a
        host is back when it is not. Nothing raised here replaces the error that made
        the host go back."""
        try:
            self.restore(host, replacement, report)
        except Exception as error:  # noqa: BLE001 (said, then the state is read back)
            self.fleet.log(f"{host}: restoring it failed: {describe(error)}")
        try:
            stranded = self.check_restored(host, replacement, report)
        except Exception as error:  # noqa: BLE001
            stranded = f"its state could not be read back: {describe(error)}"
        if stranded:
            report.stranded = stranded
            report.result += f"; NOT back in service: {stranded}"
            self.fleet.log(f"{host}: NOT back in service after going back: {stranded}")

    def _record_and_prune(self) -> str:
        settings = self.settings
        return record_and_prune(
            settings.release_log, settings.version, settings.app_image, settings.keep_releases
        )

    def _after_failure(self) -> None:
        done = [r for r in self.reports if r.result == "updated"]
        if not done:
            return
        if not self.settings.rollback_on_failure:
            hint = f" (set {self.ROLLBACK_KNOB} = True to roll them back too)"
            self.fleet.log(
                f"hosts already updated STAY on {self.settings.version.short}: "
                f"{', '.join(r.host for r in done)}{hint if self.ROLLBACK_KNOB else ''}"
            )
            return
        for report in done:
            old = report.old_version
            if old is None:
                continue
            self.fleet.log(f"{report.host}: rolling back to {old.short}")
            back = type(self)(
                self.fleet,
                # The exact digest it ran, not whatever its tag points to now.
                replace(
                    self.settings,
                    tag=old.tag,
                    digest=old.digest,
                    run_id=self.settings.run_id + "rb",
                ),
                [report.host],
                self.lb_hosts,
                self.clock,
            )
            # Its cleanup is this roll's to wait for.
            back.pending_cleanups = self.pending_cleanups
            try:
                back.roll_host(report.host)
            except Exception as failure:  # noqa: BLE001 (said; the other hosts go on)
                # It stays on the new release, serving; say so and go on with the others.
                failure = describe(failure)
                self.fleet.log(f"{report.host}: rollback to {old.short} failed: {failure}")
                report.result = f"updated; rollback failed: {failure}"
            else:
                report.result = f"rolled back to {old.short}"
            self.reports.extend(back.reports)

    # -- what a role supplies -----------------------------------------------------------

    def inspect(self, host: str):
        """What the host runs now (raise StepFailed when it cannot be read)."""
        raise NotImplementedError

    def old_version(self, before) -> Version | None:
        """What the host runs now (None: nothing of this role)."""
        raise NotImplementedError

    def replacements(self, host: str, before) -> list:
        """What must be replaced to be on the version (the tag AND its digest): a tag
        pushed again is a new release. Empty when the host already is on it."""
        raise NotImplementedError

    def replace_steps(self, host: str, replacement, report: HostReport):
        """(phase, step) pairs that put one replacement in place; a step raises
        StepFailed, and `restore` then puts the old release back."""
        raise NotImplementedError

    def restore(self, host: str, replacement, report: HostReport) -> None:
        raise NotImplementedError

    def check_restored(self, host: str, replacement, report: HostReport) -> str:
        """After `restore`: "" when the host is back in service, else its true state,
        read back from the hosts (not from what the restore's commands answered)."""
        raise NotImplementedError

    def settle(self, host: str, before, report: HostReport) -> None:
        """A host already on the version: put right what an interrupted roll left."""
        raise NotImplementedError

    def retire(self, host: str, before, report: HostReport) -> None:
        """After every replacement: stop and remove the old release's containers."""
        raise NotImplementedError

    # -- helpers for the steps ------------------------------------------------------------

    def run_command(
        self, host: str, command: str, waits_s: float = 0.0, sudo: bool = False
    ) -> CommandResult:
        """Every command of a roll goes through here: it is killed on the host past
        `waits_s` (what it waits for on purpose: a drain, a health check, a graceful
        stop) plus rollout_command_timeout_s."""
        limit_s = self.settings.command_timeout_s + waits_s
        return self.fleet.run(host, command, sudo=sudo, limit_s=limit_s)

    def must(
        self, host: str, command: str, report: HostReport, what: str, waits_s: float = 0.0
    ) -> CommandResult:
        """Run a step's command; its failure fails the replacement."""
        result = self.run_command(host, command, waits_s)
        report.waited_s += result.waited_s
        if not result.ok:
            raise StepFailed(f"{what} failed: {result.reason()}")
        return result

    def attempt(self, host: str, steps: list[tuple]) -> None:
        """Run each (what, command[, waits_s]) of a restore; say each one that fails, go
        on: the operator must know when a host is not really back on its old release."""
        for what, command, *waits in steps:
            result = self.run_command(host, command, *waits)
            if not result.ok:
                self.fleet.log(f"{host}: while restoring, could not {what}: {result.reason()}")

    @contextmanager
    def phase(self, report: HostReport, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            report.phases[name] = report.phases.get(name, 0.0) + self.clock() - start


def _format_phases(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items())
