"""What a roll needs, read from host data and checked before any host is touched."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from pyinfra import inventory, logger, state

from ..config import knob
from ..facts import HaproxyServers, RegistryTagStatus, ReleaseLog, RunningAppTag, manifest_url
from ..oneoff import parse_command
from ..preflight import once_per_run, refuse
from .engine import RollingDeploy, RolloutFailed, RolloutSettings, previous_release
from .lock import report_outcome, take_deploy_lock
from .plan import PlanError, check_tag, plan_batches
from .pyinfra_fleet import PyinfraFleet, finish_host_on_interrupt
from .report import summary_table
from .settings import DEFAULTS  # noqa: F401  (documented there)


@dataclass(frozen=True)
class RolloutRequest:
    settings: RolloutSettings
    web_hosts: list[str]
    lb_hosts: list[str]
    report_file: str = ""
    # rollout_release_command as words; empty: none.
    release_command: tuple[str, ...] = ()


def active_web_hosts() -> list:
    return [h for h in inventory.get_group("web") if state.is_host_in_limit(h)]


def rollout_request(tag: str | None = None) -> RolloutRequest:
    """The roll to `tag` (default: --data image_tag), computed and checked once per run."""
    return once_per_run("rollout", lambda: _plan_rollout(tag, action="deploy"))


def _plan_rollout(tag: str | None, action: str) -> RolloutRequest:
    web_hosts = active_web_hosts()
    if not web_hosts:
        refuse(["--limit leaves no web host to roll"])
    first = web_hosts[0]
    data = first.data
    errors = []
    try:
        tag = check_tag(tag if tag is not None else data.get("image_tag"))
        plan_batches([h.name for h in web_hosts], knob(data, "rollout_batch_size"))
    except PlanError as error:
        errors.append(str(error))
    for key in ("app_image", "app_nginx_image"):
        if not data.get(key):
            errors.append(f"{key} is not set (group_data)")
    release_command, problem = [], None
    if knob(data, "rollout_release_command"):
        release_command, problem = parse_command(
            knob(data, "rollout_release_command"), "rollout_release_command"
        )
    if problem:
        errors.append(problem)
    if errors:
        refuse(errors)

    settings = RolloutSettings(
        app_image=data.app_image,
        tag=tag,
        nginx_image=data.app_nginx_image,
        backend=knob(data, "haproxy_backend"),
        admin_socket=knob(data, "haproxy_admin_socket"),
        network=knob(data, "app_network"),
        env_file=knob(data, "app_env_file"),
        app_port=int(knob(data, "app_port")),
        publish_port=int(knob(data, "haproxy_web_port")),
        batch_size=knob(data, "rollout_batch_size"),
        drain_timeout_s=float(knob(data, "rollout_drain_timeout_s")),
        health_timeout_s=float(knob(data, "rollout_health_timeout_s")),
        readmit_timeout_s=float(knob(data, "rollout_readmit_timeout_s")),
        stop_timeout_s=int(knob(data, "rollout_stop_timeout_s")),
        rollback_on_failure=bool(knob(data, "rollout_rollback_on_failure")),
        keep_releases=int(knob(data, "rollout_keep_releases")),
        canary_observe_s=float(knob(data, "rollout_canary_observe_s")),
        canary_max_error_rate=float(knob(data, "rollout_canary_max_error_rate")),
        observe_every_host=bool(knob(data, "rollout_observe_every_host")),
        release_log=knob(data, "app_release_log"),
    )
    check_load_balancers(settings, [h.name for h in web_hosts])
    check_registry(first, settings)
    # Last of the checks: a refused run must not leave a lock behind it.
    take_deploy_lock(action, tag, [h.name for h in web_hosts])
    return RolloutRequest(
        settings,
        [h.name for h in web_hosts],
        [h.name for h in inventory.get_group("lb")],
        report_file=knob(data, "rollout_report_file"),
        release_command=tuple(release_command),
    )


def describe_plan(request: RolloutRequest) -> str:
    """The roll as it will run: batches, each host's current tag -> new tag, LB actions."""
    settings = request.settings
    batches = plan_batches(request.web_hosts, settings.batch_size)
    lbs = ", ".join(request.lb_hosts)
    lines = [f"deploykit: plan: roll {settings.image} ({len(batches)} batches)"]
    if request.release_command:
        lines.append(
            f"  release command: {shlex.join(request.release_command)} on "
            f"{request.web_hosts[0]} with {settings.tag}, once, before any host is drained"
        )
    for number, batch in enumerate(batches, start=1):
        label = "canary" if number == 1 else f"batch {number}"
        for name in batch:
            current = inventory.get_host(name).get_fact(RunningAppTag) or "(none)"
            lines.append(f"  {label:<9} {name:<16} {current} -> {settings.tag}")
    lines.append(
        f"  per host: drain on {lbs} (until 0 sessions, at most "
        f"{settings.drain_timeout_s:g}s), maint; start app + nginx, health check; "
        f"ready on {lbs} (until UP, at most {settings.readmit_timeout_s:g}s); stop the old pair"
    )
    if len(request.web_hosts) == 1:
        lines.append(
            "  WARNING: one web host only: while it is swapped no server is in rotation and "
            "requests get 503 for a few seconds; zero downtime needs two or more"
        )
    if settings.canary_observe_s > 0:
        watched = "every host" if settings.observe_every_host else request.web_hosts[0]
        lines.append(
            f"  canary gate: {watched} watched in HAProxy for {settings.canary_observe_s:g}s "
            f"after re-admission (at most {settings.canary_max_error_rate:.0%} failed)"
        )
    if settings.rollback_on_failure:
        lines.append("  on failure: the failed host returns to its old pair; done hosts roll back")
    else:
        lines.append("  on failure: the failed host returns to its old pair; the roll stops")
    return "\n".join(lines)


def check_load_balancers(settings: RolloutSettings, web_hosts: list[str]) -> None:
    """Every load balancer must answer on its runtime API and know every host to roll."""
    errors = []
    lbs = inventory.get_group("lb", default=[]) or []
    if not lbs:
        errors.append("no hosts in group 'lb': nothing could drain the web hosts")
    for lb in lbs:
        if not lb.connected:
            lb.connect(raise_exceptions=True)  # outside --limit, the LBs are still driven
        servers = lb.get_fact(
            HaproxyServers, socket=settings.admin_socket, backend=settings.backend
        )
        if servers is None:
            errors.append(
                f"{lb.name}: HAProxy's runtime API ({settings.admin_socket}) does not answer; "
                "run deploys/provision.py first"
            )
            continue
        unknown = [name for name in web_hosts if name not in servers]
        if unknown:
            errors.append(
                f"{lb.name}: backend {settings.backend!r} has no server {', '.join(unknown)}; "
                "run deploys/provision.py so HAProxy knows every web host"
            )
    if errors:
        refuse(errors)


def check_registry(first_web_host, settings: RolloutSettings) -> None:
    """The tag must exist where the hosts pull from: asked from the first web host."""
    try:
        url = manifest_url(
            settings.app_image,
            settings.tag,
            list(first_web_host.data.get("docker_insecure_registries") or []),
        )
    except ValueError as error:
        refuse([str(error)])
    status = first_web_host.get_fact(RegistryTagStatus, url=url)
    if status == "200":
        return
    if status == "404":
        refuse([f"image {settings.image} does not exist in the registry (HTTP 404 for {url})"])
    refuse(
        [
            f"the registry does not answer as expected from {first_web_host.name} "
            f"(HTTP {status} for {url}); is it up and reachable?"
        ]
    )


def previous_tag_request() -> RolloutRequest:
    """A roll back to the release before the current one, by the first web host's log."""
    return once_per_run("rollout", lambda: _plan_rollout(_previous_tag(), action="rollback"))


def _previous_tag() -> str:
    web_hosts = active_web_hosts()
    if not web_hosts:
        refuse(["--limit leaves no web host to roll back"])
    first = web_hosts[0]
    current = first.get_fact(RunningAppTag)
    log = first.get_fact(ReleaseLog, path=knob(first.data, "app_release_log"))
    previous = previous_release("\n".join(log), current)
    if previous is None:
        refuse([f"{first.name} has no earlier release to roll back to (release log: {log})"])
    return previous


def roll_web_hosts(state, host, request: RolloutRequest) -> bool:  # noqa: F811
    """The pyinfra callback: runs the whole roll once, from the first web host's op.

    pyinfra passes (state, host) to a callback whose first parameters bear those names.
    """
    fleet = PyinfraFleet(state)
    engine = RollingDeploy(fleet, request.settings, request.web_hosts, request.lb_hosts)
    started = time.monotonic()
    try:
        with finish_host_on_interrupt(engine, fleet):
            reports = engine.run()
    except RolloutFailed as failure:
        write_report(request, failure.reports, time.monotonic() - started, str(failure))
        report_outcome(result="failed", stopped_at=failure.host, reason=failure.reason)
        logger.info(summary_table(failure.reports))
        done = [r.host for r in failure.reports if r.result == "updated"]
        state_of_host = (
            f"{failure.host} is back on its previous release and in rotation. "
            if failure.touched
            else f"{failure.host} was not touched. "
        )
        logger.error(
            f"deploykit: ROLL STOPPED at {failure.host}: {failure.reason}. "
            + state_of_host
            + (
                f"Already on {request.settings.tag}: {', '.join(done)}."
                if done
                else "No host was left on the new release."
            )
        )
        return False
    write_report(request, reports, time.monotonic() - started, None)
    report_outcome(result="succeeded")
    logger.info(summary_table(reports))
    return True


def write_report(request: RolloutRequest, reports, seconds: float, failure: str | None) -> None:
    path = request.report_file
    if not path:
        return
    document = {
        "image": request.settings.image,
        "web_hosts": request.web_hosts,
        "lb_hosts": request.lb_hosts,
        "batch_size": request.settings.batch_size,
        "total_s": round(seconds, 3),
        "failure": failure,
        "hosts": [
            {
                "host": r.host,
                "old_tag": r.old_tag,
                "new_tag": r.new_tag,
                "result": r.result,
                "phases": {k: round(v, 3) for k, v in r.phases.items()},
                "total_s": round(r.total_s, 3),
                "waited_s": round(r.waited_s, 3),
                "overhead_s": round(r.overhead_s, 3),
            }
            for r in reports
        ],
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")
