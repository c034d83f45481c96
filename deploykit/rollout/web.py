"""The web roll's steps: each web host drained on every load balancer, swapped to the
new app + nginx pair, checked, re-admitted (the first host then watched in HAProxy:
the canary gate), and its old pair retired. The engine (engine.py) runs them.

The old app keeps running until the new pair is re-admitted and has passed the gate,
so a failure at any step puts the host back on its old pair at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..commands import haproxy as haproxy_commands
from ..commands.containers import remove, start_existing, stop, wait_http_ok
from ..commands.images import Version
from ..commands.pairs import NginxTls, Pair, list_pairs, remove_release, start_app, start_nginx
from ..commands.shell import TIMED_OUT, timed
from ..config import knob
from .containers import HostContainers, Release
from .engine import CommandResult, HostReport, Roll, RollSettings, StepFailed


@dataclass(frozen=True, kw_only=True)
class WebRollSettings(RollSettings):
    nginx_image: str  # with its tag: registry:5000/deploykit/nginx:1
    backend: str
    admin_socket: str
    app_port: int
    publish_port: int
    drain_timeout_s: float
    health_timeout_s: float
    readmit_timeout_s: float
    # Re-admit with `health up` once the kit's own check passed (rollout_readmit_force_up).
    readmit_force_up: bool
    # Never drain the last server UP: wait this long for another one, then refuse...
    last_server_wait_s: float
    # ...unless this is set.
    drain_last_server: bool
    # Canary gate: watch HAProxy's counters for the re-admitted server this long
    # (0 turns it off), and fail the host above this share of failed responses.
    canary_observe_s: float
    canary_max_error_rate: float
    observe_every_host: bool
    # Extra `docker run` flags of the app and nginx containers (hardening_*_run_flags).
    app_run_flags: tuple[str, ...] = ()
    nginx_run_flags: tuple[str, ...] = ()
    # nginx also serves TLS for HAProxy (haproxy_backend_tls); None: plain HTTP only.
    nginx_tls: NginxTls | None = None

    @classmethod
    def from_data(cls, data, tag: str, **overrides) -> "WebRollSettings":
        """The web roll's settings as a host's data sets them (else their defaults)."""
        return cls(
            **RollSettings.common_fields(data, tag, stop_timeout="rollout_stop_timeout_s"),
            batch_size=knob(data, "rollout_batch_size"),
            rollback_on_failure=bool(knob(data, "rollout_rollback_on_failure")),
            nginx_image=data.get("app_nginx_image"),
            backend=knob(data, "haproxy_backend"),
            admin_socket=knob(data, "haproxy_admin_socket"),
            app_port=int(knob(data, "app_port")),
            publish_port=int(knob(data, "haproxy_web_port")),
            drain_timeout_s=float(knob(data, "rollout_drain_timeout_s")),
            health_timeout_s=float(knob(data, "rollout_health_timeout_s")),
            readmit_timeout_s=float(knob(data, "rollout_readmit_timeout_s")),
            readmit_force_up=bool(knob(data, "rollout_readmit_force_up")),
            last_server_wait_s=float(knob(data, "rollout_last_server_wait_s")),
            drain_last_server=bool(knob(data, "rollout_drain_last_server")),
            canary_observe_s=float(knob(data, "rollout_canary_observe_s")),
            canary_max_error_rate=float(knob(data, "rollout_canary_max_error_rate")),
            observe_every_host=bool(knob(data, "rollout_observe_every_host")),
            app_run_flags=tuple(knob(data, "hardening_app_run_flags")),
            nginx_run_flags=tuple(knob(data, "hardening_nginx_run_flags")),
            nginx_tls=(
                NginxTls(
                    port=int(knob(data, "haproxy_backend_tls_port")),
                    folder=knob(data, "haproxy_backend_tls_dir"),
                )
                if knob(data, "haproxy_backend_tls")
                else None
            ),
            **overrides,
        )


@dataclass
class PairSwap:
    """One host's move from its old pair (None on a first deploy) to the new one."""

    old: Pair | None
    new: Pair
    # How far it got: what a failure has to undo.
    started: bool = False
    admitted: bool = False


class WebRoll(Roll):
    PHASES = ("drain", "start", "health", "readmit", "observe", "cleanup")
    NAME = "ROLL"
    RESTORED = "{host} is back on its previous release and in rotation."
    settings: WebRollSettings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Hosts this roll has drained and not yet re-admitted: a host of the same batch
        # must not count them as the server left serving.
        self.out_of_rotation: set[str] = set()

    # -- the steps the engine runs ------------------------------------------------------

    def inspect(self, host: str) -> HostContainers:
        result = self.run_command(host, list_pairs())
        if not result.ok:
            raise StepFailed(f"cannot list containers: {result.reason()}")
        return HostContainers.parse(result.stdout)

    def old_version(self, before: HostContainers) -> Version | None:
        current = before.current()
        return current.pair.version if current else None

    def replacements(self, host: str, before: HostContainers) -> list[PairSwap]:
        settings = self.settings
        current = before.current()
        if current and current.pair.version == settings.version and current.serving:
            return []
        new = Pair(release=settings.release, tag=settings.tag, digest=settings.digest)
        return [PairSwap(current.pair if current else None, new)]

    def replace_steps(self, host: str, swap: PairSwap, report: HostReport):
        steps = [
            ("drain", lambda: self.drain_everywhere(host, report, serving=swap.old is not None)),
            ("start", lambda: self.start_new_app(host, swap, report)),
            ("health", lambda: self.switch_nginx(host, swap, report)),
            ("readmit", lambda: self.readmit(host, swap, report)),
        ]
        if self.observes(host):
            steps.append(("observe", lambda: self.canary_gate(host, report)))
        return steps

    def restore(self, host: str, swap: PairSwap, report: HostReport) -> None:
        """Back to the old pair, serving, and back in rotation."""
        if swap.admitted:
            # The new pair takes traffic: out of rotation first, sessions finished.
            self.drain_everywhere(host, report, restoring=True)
        if swap.started:
            old = swap.old
            back_to = old.version.short if old else "nothing"
            self.fleet.log(f"{host}: new pair failed; returning to {back_to}")
            steps = [("remove the new pair", remove_release(swap.new.release))]
            if old is not None:
                steps += [
                    ("start the old app", start_existing(old.app)),
                    ("start the old nginx", start_existing(old.nginx)),
                    ("check the old pair", self._check_pair(old), self.settings.health_timeout_s),
                ]
            self.attempt(host, steps)
        self.enable_everywhere(host, report, quiet=True)

    def check_restored(self, host: str, swap: PairSwap, report: HostReport) -> str:
        """What every LB says of the host now: "" when it is UP on all of them."""
        settings = self.settings
        command = haproxy_commands.show_servers(settings.admin_socket, settings.backend)
        states = []
        for lb, result in self._on_every_lb(command):
            servers = haproxy_commands.parse_show_servers(result.stdout) if result.ok else {}
            if not result.ok:
                states.append(f"{lb}: unreadable ({result.reason()})")
            elif host not in servers:
                states.append(f"{lb}: no server {host}")
            elif not servers[host][0].startswith("UP"):
                states.append(f"{lb}: {servers[host][0]}")
        return ", ".join(states)

    def settle(self, host: str, before: HostContainers, report: HostReport) -> None:
        """Drop what an interrupted roll left, and make sure the host is back in
        rotation on every LB."""
        with self.phase(report, "readmit"):
            current = before.current()
            self._remove(host, before.others({current.pair.release}))
            self.enable_everywhere(host, report)

    def retire(self, host: str, before: HostContainers, report: HostReport) -> None:
        """Stop the old app gracefully and drop the old pair; anything else of the kit
        on the host is what an interrupted roll left behind."""
        current = before.current()
        if current:
            old = current.pair
            result = self.run_command(
                host,
                timed(
                    stop(old.app, self.settings.stop_timeout_s)
                    + " && "
                    + remove(old.nginx, old.app)
                ),
                waits_s=self.settings.stop_timeout_s,
            )
            report.waited_s += result.waited_s
            if not result.ok:
                self.fleet.log(f"{host}: removing the old pair failed: {result.reason()}")
        self._remove(host, self.inspect(host).others({self.settings.release}))

    # -- the web roll's own steps ---------------------------------------------------------

    def start_new_app(self, host: str, swap: PairSwap, report: HostReport) -> None:
        settings = self.settings
        swap.started = True
        self.must(
            host,
            timed(
                start_app(
                    swap.new,
                    settings.image,
                    settings.network,
                    settings.env_file,
                    settings.stop_timeout_s,
                    extra_flags=settings.app_run_flags,
                )
            ),
            report,
            "start the new app container",
        )

    def switch_nginx(self, host: str, swap: PairSwap, report: HostReport) -> None:
        """Once the new app answers: the old nginx stops (the host's port is free), the
        new one starts in front of the new app, and the pair answers through it."""
        settings = self.settings
        self.must(
            host,
            wait_http_ok(
                f"http://CONTAINER_IP:{settings.app_port}/up",
                settings.health_timeout_s,
                container=swap.new.app,
            ),
            report,
            "new app container health check",
            waits_s=settings.health_timeout_s,
        )
        if swap.old:
            self.must(
                host,
                timed(stop(swap.old.nginx, settings.stop_timeout_s)),
                report,
                "stop the old nginx",
                waits_s=settings.stop_timeout_s,
            )
        self.must(
            host,
            timed(
                start_nginx(
                    swap.new,
                    settings.nginx_image,
                    settings.network,
                    settings.app_port,
                    settings.publish_port,
                    settings.nginx_tls,
                    extra_flags=settings.nginx_run_flags,
                )
            ),
            report,
            "start the new nginx",
        )
        self.must(
            host,
            self._check_pair(swap.new),
            report,
            "new pair health check through nginx",
            waits_s=settings.health_timeout_s,
        )

    def readmit(self, host: str, swap: PairSwap, report: HostReport) -> None:
        # The new pair has just answered the kit's own check through nginx.
        self.enable_everywhere(host, report, force_up=self.settings.readmit_force_up)
        swap.admitted = True

    def observes(self, host: str) -> bool:
        settings = self.settings
        if settings.canary_observe_s <= 0:
            return False
        return settings.observe_every_host or host == self.hosts[0]

    def canary_gate(self, host: str, report: HostReport) -> None:
        """Real traffic through every LB for a short window; too many failures and the
        host goes back to its old pair (the old app is still running at this point)."""
        settings = self.settings
        command = haproxy_commands.observe_server(
            settings.admin_socket, settings.backend, host, settings.canary_observe_s
        )
        attempts = failures = 0
        for lb, result in self._on_every_lb(command, waits_s=settings.canary_observe_s):
            if not result.ok:
                raise StepFailed(f"canary gate could not read {lb}'s counters: {result.reason()}")
            try:
                responses, errors, retries = haproxy_commands.parse_observation(result.stdout)
            except haproxy_commands.CountersUntrusted as untrusted:
                # Fails closed: counts that cannot be trusted pass no release.
                raise StepFailed(f"canary gate cannot trust {lb}'s counters: {untrusted}")
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
            raise StepFailed(
                f"canary gate: {failures} of {attempts} requests failed in HAProxy within "
                f"{settings.canary_observe_s:g}s ({rate:.0%}, limit "
                f"{settings.canary_max_error_rate:.0%})"
            )

    def drain_everywhere(
        self, host: str, report: HostReport, restoring: bool = False, serving: bool = True
    ) -> None:
        """`serving`: the host has a pair that may serve (not a first deploy); then it is
        never drained while it is the last server that may serve, unless a setting says
        so. A restore drains regardless: the host is on its way back to what served."""
        settings = self.settings
        command = haproxy_commands.drain_server(
            settings.admin_socket, settings.backend, host, settings.drain_timeout_s
        )
        waits_s = settings.drain_timeout_s
        if serving and not restoring and not settings.drain_last_server:
            # Never the last server UP (an outage): on each LB, first wait for another.
            guard = haproxy_commands.wait_for_another_server(
                settings.admin_socket,
                settings.backend,
                host,
                sorted(self.out_of_rotation - {host}),
                settings.last_server_wait_s,
            )
            command = f"( {guard} ) || exit $?; {command}"
            waits_s += settings.last_server_wait_s
        self.out_of_rotation.add(host)
        results = self._on_every_lb(command, waits_s=waits_s)
        refusals = [
            f"{lb}: {result.stderr.strip().splitlines()[-1]}"
            for lb, result in results
            if result.exit_code == haproxy_commands.LAST_SERVER and result.stderr.strip()
        ]
        if refusals:
            raise StepFailed(
                f"refusing to drain {host}, the last server UP ({'; '.join(refusals)}); "
                "set rollout_drain_last_server = True to drain it anyway"
            )
        for lb, result in results:
            if result.exit_code == TIMED_OUT:
                self.fleet.log(f"{host}: drain on {lb} timed out, continuing: {result.reason()}")
            elif not result.ok and restoring:
                self.fleet.log(f"{host}: drain on {lb} failed while restoring: {result.reason()}")
            elif not result.ok:
                raise StepFailed(f"drain on {lb} failed: {result.reason()}")
        report.waited_s += max((r.waited_s for _, r in results), default=0)

    def enable_everywhere(
        self, host: str, report: HostReport, quiet: bool = False, force_up: bool = False
    ) -> None:
        """ready on every LB, then UP. `force_up` (`health up`) only right after the kit's
        own check of the pair that will serve: elsewhere (a restore, a re-run settling a
        host) HAProxy's checks decide, as the host may have nothing that answers."""
        settings = self.settings
        command = haproxy_commands.enable_server(
            settings.admin_socket,
            settings.backend,
            host,
            settings.readmit_timeout_s,
            force_up=force_up,
        )
        results = self._on_every_lb(command, waits_s=settings.readmit_timeout_s)
        self.out_of_rotation.discard(host)
        report.waited_s += max((r.waited_s for _, r in results), default=0)
        failed = [(lb, r) for lb, r in results if not r.ok]
        if failed and quiet:
            # While restoring: said here, and the host's true state is read back after.
            for lb, result in failed:
                self.fleet.log(f"{host}: not UP on {lb} after re-enabling: {result.reason()}")
        elif failed:
            lb, result = failed[0]
            raise StepFailed(f"not UP on {lb} after re-enabling: {result.reason()}")

    def _on_every_lb(self, command: str, waits_s: float = 0.0) -> list[tuple[str, CommandResult]]:
        """Every load balancer in step: the same action on all of them, in parallel."""
        return self.fleet.parallel(
            [
                lambda lb=lb: (lb, self.run_command(lb, command, waits_s, sudo=True))
                for lb in self.lb_hosts
            ]
        )

    def _check_pair(self, pair: Pair) -> str:
        """The pair answers through its nginx, on the port HAProxy checks."""
        return wait_http_ok(
            f"http://127.0.0.1:{self.settings.publish_port}/up",
            self.settings.health_timeout_s,
            container=pair.nginx,
        )

    def _remove(self, host: str, releases: list[Release]) -> None:
        for release in releases:
            self.run_command(host, remove_release(release.pair.release))
