"""The rolling deploy: web hosts in order, each drained on every load balancer, swapped
to the new app + nginx pair, checked, and re-admitted before the next one starts.

Why an engine of its own, driven from ONE pyinfra callback, instead of pyinfra
operations per host (see shared/PYINFRA_NOTES.md):
- pyinfra plans every operation for every host before running any, and runs each
  operation on all hosts at once; `--serial` goes host by host but in set order, with
  no batches, and does not stop at the first failure;
- there is no `delegate_to`: a web host's swap needs LB actions in the middle of it;
- what happens next depends on what just happened (a failed health check means going
  back to the old pair), which a precomputed plan cannot express.
So the roll is plain Python over pyinfra's own SSH connections: the order is a list,
failures are exceptions, and `Fleet` is the only thing that touches hosts, which is
what lets the unit tests replay a roll against a fake fleet and check its exact order.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, TypeVar

from ..commands import docker as docker_commands
from ..commands import haproxy as haproxy_commands
from ..commands.docker import Pair
from .containers import HostContainers, Release
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

    def run(self, host: str, command: str, sudo: bool = False) -> CommandResult: ...

    def parallel(self, calls: list[Callable[[], T]]) -> list[T]: ...

    def log(self, message: str) -> None: ...


@dataclass(frozen=True)
class RolloutSettings:
    app_image: str  # repository, without the tag: registry:5000/deploykit/app
    tag: str
    nginx_image: str  # with its tag: registry:5000/deploykit/nginx:1
    backend: str
    admin_socket: str
    network: str
    env_file: str
    app_port: int
    publish_port: int
    batch_size: object = 1
    drain_timeout_s: float = 30
    health_timeout_s: float = 30
    readmit_timeout_s: float = 30
    stop_timeout_s: int = 30
    rollback_on_failure: bool = False
    keep_releases: int = 3
    # Canary gate: watch HAProxy's counters for the re-admitted server this long
    # (0 turns it off), and fail the host above this share of failed responses.
    canary_observe_s: float = 0.0
    canary_max_error_rate: float = 0.0
    observe_every_host: bool = False
    release_log: str = "/var/lib/deploykit/releases"
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))

    @property
    def image(self) -> str:
        return f"{self.app_image}:{self.tag}"


@dataclass
class HostReport:
    host: str
    old_tag: str | None
    new_tag: str
    phases: dict[str, float] = field(default_factory=dict)
    waited_s: float = 0.0
    result: str = "pending"

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


class SwapFailed(Exception):
    """A host's new pair failed; the host is back on its old pair and serving."""


class RollingDeploy:
    def __init__(
        self,
        fleet: Fleet,
        settings: RolloutSettings,
        web_hosts: list[str],
        lb_hosts: list[str],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.fleet = fleet
        self.settings = settings
        self.web_hosts = web_hosts
        self.lb_hosts = lb_hosts
        self.clock = clock
        self.reports: list[HostReport] = []
        # Set from a signal handler (Ctrl-C): the host in progress is finished, never
        # abandoned half-swapped, and the roll stops before the next batch.
        self.stop_requested = False

    # -- the roll ---------------------------------------------------------------------

    def run(self) -> list[HostReport]:
        batches = plan_batches(self.web_hosts, self.settings.batch_size)
        self.fleet.log(
            f"rolling {self.settings.image} to {len(self.web_hosts)} hosts in "
            f"{len(batches)} batches: " + " | ".join(", ".join(b) for b in batches)
        )
        for batch in batches:
            if self.stop_requested:
                done = ", ".join(r.host for r in self.reports if r.result == "updated") or "none"
                raise RolloutFailed(
                    batch[0],
                    f"interrupted before this host; hosts done (on {self.settings.tag}): {done}",
                    self.reports,
                    touched=False,
                )
            outcomes = self.fleet.parallel([lambda h=h: self._roll_host_safely(h) for h in batch])
            failures = [(host, reason) for host, reason in outcomes if reason]
            if failures:
                host, reason = failures[0]
                self._after_failure()
                raise RolloutFailed(host, reason, self.reports)
        return self.reports

    def _roll_host_safely(self, host: str) -> tuple[str, str | None]:
        try:
            self.roll_host(host)
        except SwapFailed as failure:
            return host, str(failure)
        return host, None

    def _after_failure(self) -> None:
        done = [r for r in self.reports if r.result == "updated"]
        if not done:
            return
        if not self.settings.rollback_on_failure:
            self.fleet.log(
                "hosts already updated STAY on "
                f"{self.settings.tag}: {', '.join(r.host for r in done)} "
                "(set rollout_rollback_on_failure = True to roll them back too)"
            )
            return
        for report in done:
            if report.old_tag is None:
                continue
            self.fleet.log(f"{report.host}: rolling back to {report.old_tag}")
            back = RollingDeploy(
                self.fleet,
                replace(self.settings, tag=report.old_tag, run_id=self.settings.run_id + "rb"),
                [report.host],
                self.lb_hosts,
                self.clock,
            )
            try:
                back.roll_host(report.host)
            except SwapFailed as failure:
                # It stays on the new release, serving; say so and go on with the others.
                self.fleet.log(f"{report.host}: rollback to {report.old_tag} failed: {failure}")
                report.result = f"updated; rollback failed: {failure}"
            else:
                report.result = f"rolled back to {report.old_tag}"
            self.reports.extend(back.reports)

    def roll_host(self, host: str) -> HostReport:
        settings = self.settings
        containers = self.inspect(host)
        current = containers.current()
        old = current.pair if current else None
        report = HostReport(host, old.tag if old else None, settings.tag)
        self.reports.append(report)
        new = Pair(release=f"{settings.tag}-{settings.run_id}", tag=settings.tag)
        if current and current.pair.tag == settings.tag and current.serving:
            # Already on the tag (a re-run after an interruption, or a host done by an
            # earlier roll): drop what an interrupted roll left, and make sure the host
            # is back in rotation on every LB.
            with self._phase(report, "readmit"):
                self._remove(host, containers.others({current.pair.release}))
                self._enable_everywhere(host, report)
            report.result = "already on tag"
            return report

        with self._phase(report, "drain"):
            self._drain_everywhere(host, report)
        admitted = False
        try:
            with self._phase(report, "start"):
                self._must(
                    host,
                    timed(
                        docker_commands.start_app(
                            new,
                            settings.image,
                            settings.network,
                            settings.env_file,
                            settings.stop_timeout_s,
                        )
                    ),
                    report,
                    "start the new app container",
                )
            with self._phase(report, "health"):
                self._must(
                    host,
                    docker_commands.wait_http_ok(
                        f"http://CONTAINER_IP:{settings.app_port}/up",
                        settings.health_timeout_s,
                        container=new.app,
                    ),
                    report,
                    "new app container health check",
                )
                if old:
                    self._must(
                        host,
                        timed(docker_commands.stop(old.nginx, settings.stop_timeout_s)),
                        report,
                        "stop the old nginx",
                    )
                self._must(
                    host,
                    timed(
                        docker_commands.start_nginx(
                            new,
                            settings.nginx_image,
                            settings.network,
                            settings.app_port,
                            settings.publish_port,
                        )
                    ),
                    report,
                    "start the new nginx",
                )
                self._must(
                    host,
                    docker_commands.wait_http_ok(
                        f"http://127.0.0.1:{settings.publish_port}/up",
                        settings.health_timeout_s,
                        container=new.nginx,
                    ),
                    report,
                    "new pair health check through nginx",
                )
            with self._phase(report, "readmit"):
                self._enable_everywhere(host, report)
            admitted = True
            if self._observes(host):
                with self._phase(report, "observe"):
                    self._canary_gate(host, report)
        except SwapFailed as failure:
            if admitted:
                # The new pair takes traffic: out of rotation first, sessions finished.
                self._drain_everywhere(host, report, restoring=True)
            self._restore_old_pair(host, new, old, report)
            report.result = f"failed: {failure}"
            raise

        with self._phase(report, "cleanup"):
            self._retire(host, old, report)
        report.result = "updated"
        self.fleet.log(
            f"{host}: {report.old_tag or '(none)'} -> {settings.tag} in {report.total_s:.1f}s "
            f"({_format_phases(report.phases)}; overhead {report.overhead_s:.2f}s)"
        )
        return report

    # -- steps ------------------------------------------------------------------------

    def inspect(self, host: str) -> HostContainers:
        result = self.fleet.run(host, docker_commands.list_pairs())
        if not result.ok:
            raise SwapFailed(f"cannot list containers: {result.reason()}")
        return HostContainers.parse(result.stdout)

    def _remove(self, host: str, releases: list[Release]) -> None:
        for release in releases:
            self.fleet.run(host, docker_commands.remove_release(release.pair.release))

    def _observes(self, host: str) -> bool:
        settings = self.settings
        if settings.canary_observe_s <= 0:
            return False
        return settings.observe_every_host or host == self.web_hosts[0]

    def _canary_gate(self, host: str, report: HostReport) -> None:
        """Real traffic through every LB for a short window; too many failures and the
        host goes back to its old pair (the old app is still running at this point)."""
        settings = self.settings
        command = haproxy_commands.observe_server(
            settings.admin_socket, settings.backend, host, settings.canary_observe_s
        )
        attempts = failures = 0
        for lb, result in self._on_every_lb(command):
            if not result.ok:
                raise SwapFailed(f"canary gate could not read {lb}'s counters: {result.reason()}")
            responses, errors, retries = haproxy_commands.parse_observation(result.stdout)
            # A 5xx that HAProxy replayed on another server (retry-on) is counted as a
            # retry, not as a response: it is an attempt that failed all the same.
            attempts += responses + retries
            failures += errors + retries
        report.waited_s += settings.canary_observe_s
        if attempts == 0:
            self.fleet.log(f"{host}: canary gate saw no traffic in {settings.canary_observe_s:g}s")
            return
        rate = failures / attempts
        self.fleet.log(
            f"{host}: canary gate: {failures} failed of {attempts} requests "
            f"in {settings.canary_observe_s:g}s"
        )
        if failures and rate > settings.canary_max_error_rate:
            raise SwapFailed(
                f"canary gate: {failures} of {attempts} requests failed in HAProxy within "
                f"{settings.canary_observe_s:g}s ({rate:.0%}, limit "
                f"{settings.canary_max_error_rate:.0%})"
            )

    def _drain_everywhere(self, host: str, report: HostReport, restoring: bool = False) -> None:
        settings = self.settings
        command = haproxy_commands.drain_server(
            settings.admin_socket, settings.backend, host, settings.drain_timeout_s
        )
        results = self._on_every_lb(command)
        for lb, result in results:
            if result.exit_code == haproxy_commands.TIMED_OUT:
                self.fleet.log(f"{host}: drain on {lb} timed out, continuing: {result.reason()}")
            elif not result.ok and restoring:
                self.fleet.log(f"{host}: drain on {lb} failed while restoring: {result.reason()}")
            elif not result.ok:
                self._enable_everywhere(host, report, quiet=True)
                raise SwapFailed(f"drain on {lb} failed: {result.reason()}")
        report.waited_s += max((r.waited_s for _, r in results), default=0)

    def _enable_everywhere(self, host: str, report: HostReport, quiet: bool = False) -> None:
        settings = self.settings
        command = haproxy_commands.enable_server(
            settings.admin_socket, settings.backend, host, settings.readmit_timeout_s
        )
        results = self._on_every_lb(command)
        report.waited_s += max((r.waited_s for _, r in results), default=0)
        failed = [(lb, r) for lb, r in results if not r.ok]
        if failed and not quiet:
            lb, result = failed[0]
            raise SwapFailed(f"not UP on {lb} after re-enabling: {result.reason()}")

    def _on_every_lb(self, command: str) -> list[tuple[str, CommandResult]]:
        """Every load balancer in step: the same action on all of them, in parallel."""
        return self.fleet.parallel(
            [lambda lb=lb: (lb, self.fleet.run(lb, command, sudo=True)) for lb in self.lb_hosts]
        )

    def _must(self, host: str, command: str, report: HostReport, what: str) -> CommandResult:
        result = self.fleet.run(host, command)
        report.waited_s += result.waited_s
        if not result.ok:
            raise SwapFailed(f"{what} failed: {result.reason()}")
        return result

    def _restore_old_pair(self, host: str, new: Pair, old: Pair | None, report: HostReport):
        """Back to the old pair, serving, and back in rotation. Each step is reported
        when it fails: the operator must know if the host is not really restored."""
        self.fleet.log(f"{host}: new pair failed; returning to {old.tag if old else 'nothing'}")
        steps = [("remove the new pair", docker_commands.remove_release(new.release))]
        if old is not None:
            steps += [
                ("start the old app", docker_commands.start_existing(old.app)),
                ("start the old nginx", docker_commands.start_existing(old.nginx)),
                (
                    "check the old pair",
                    docker_commands.wait_http_ok(
                        f"http://127.0.0.1:{self.settings.publish_port}/up",
                        self.settings.health_timeout_s,
                        container=old.nginx,
                    ),
                ),
            ]
        for what, command in steps:
            result = self.fleet.run(host, command)
            if not result.ok:
                self.fleet.log(f"{host}: while restoring, could not {what}: {result.reason()}")
        self._enable_everywhere(host, report, quiet=True)

    def _retire(self, host: str, old: Pair | None, report: HostReport) -> None:
        """Stop the old app gracefully, drop the old pair, record the release, and keep
        only the images of the last `keep_releases` releases (what rollback needs)."""
        settings = self.settings
        if old:
            result = self.fleet.run(
                host,
                timed(
                    docker_commands.stop(old.app, settings.stop_timeout_s)
                    + " && "
                    + docker_commands.remove(old.nginx, old.app)
                ),
            )
            report.waited_s += result.waited_s
            if not result.ok:
                self.fleet.log(f"{host}: removing the old pair failed: {result.reason()}")
        # Anything else of the kit is what an interrupted roll left behind.
        self._remove(host, self.inspect(host).others({f"{settings.tag}-{settings.run_id}"}))
        record = record_release(settings.release_log, settings.tag)
        prune = prune_images(settings.app_image, settings.release_log, settings.keep_releases)
        cleanup = f"( {prune} ); {docker_commands.prune_dangling_images()}"
        self.fleet.run(host, f"{record}; {docker_commands.with_images_lock(cleanup)}")

    # -- timing -----------------------------------------------------------------------

    def _phase(self, report: HostReport, name: str):
        engine = self

        class _Timer:
            def __enter__(self):
                self.start = engine.clock()

            def __exit__(self, *exc):
                report.phases[name] = report.phases.get(name, 0.0) + engine.clock() - self.start
                return False

        return _Timer()


def timed(command: str) -> str:
    """Run a command on the host and report its duration as time spent waiting on it."""
    return (
        f"start=$(date +%s%N); {command}; status=$?; "
        f"echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit $status"
    )


def record_release(release_log: str, tag: str) -> str:
    q = docker_commands.q
    return f'mkdir -p "$(dirname {q(release_log)})" && echo {q(tag)} >> {q(release_log)}'


def prune_images(app_image: str, release_log: str, keep: int) -> str:
    """Remove app images whose tag is not among the last `keep` distinct releases.

    Only images of the app's own repository are considered; anything else on the host
    (data containers, other images) is never touched."""
    q = docker_commands.q
    # Without a readable log nothing is known to be old: remove nothing.
    return (
        f"[ -s {q(release_log)} ] || exit 0; "
        f"keep=$(tac {q(release_log)} | awk '!seen[$0]++' | head -n {int(keep)} | tr '\\n' ' '); "
        f'[ -n "$keep" ] || exit 0; '
        f"docker image ls --format '{{{{.Tag}}}}' {q(app_image)} | while read -r tag; do "
        f'case " $keep " in *" $tag "*) ;; *) docker image rm {q(app_image)}:"$tag" '
        f">/dev/null 2>&1 || true ;; esac; done"
    )


def previous_release(release_log_text: str, current_tag: str | None) -> str | None:
    """The release before the current one, from a host's release log (oldest first)."""
    tags = [line.strip() for line in release_log_text.splitlines() if line.strip()]
    if current_tag is not None:
        while tags and tags[-1] == current_tag:
            tags.pop()
    return tags[-1] if tags else None


def _format_phases(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items())
