"""What a roll needs, read from host data and checked before any host is touched: the
web roll (deploys/web.py), the rollback (deploys/rollback.py) and the workers' roll
(deploys/jobs.py), each planned once per run, and the plan each prints."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from pyinfra import inventory

from ..commands.images import Version
from ..config import command_words, knob
from ..errors import refuse
from ..facts import HaproxyServers, ReleaseLog, RunningAppVersion
from ..preflight import hosts_in_run, once_per_run
from ..registry_access import resolve_image
from .engine import Roll, RollSettings
from .lock import take_deploy_lock
from .plan import PlanError, check_tag, plan_batches, previous_release
from .web import WebRoll, WebRollSettings
from .workers import WorkerRoll, WorkerRollSettings


@dataclass(frozen=True)
class RollRequest:
    roll: type[Roll]  # WebRoll or WorkerRoll: whose steps replace a host's release
    settings: RollSettings
    hosts: list[str]
    lb_hosts: list[str] = ()
    # On the machine running pyinfra: the roll's JSON report (rollout_report_file).
    report_file: str = ""
    # rollout_release_command as words; empty: none.
    release_command: tuple[str, ...] = ()


def _checked_tag(data, tag: str | None) -> tuple[str | None, list[str]]:
    """The tag to roll (default: --data image_tag), and what is wrong with it."""
    try:
        return check_tag(tag if tag is not None else data.get("image_tag")), []
    except PlanError as error:
        return tag, [str(error)]


def _unset(data, *keys: str) -> list[str]:
    return [f"{key} is not set (group_data)" for key in keys if not data.get(key)]


# -- the web roll ----------------------------------------------------------------------


def web_roll_request(tag: str | None = None) -> RollRequest:
    """The roll to `tag` (default: --data image_tag), computed and checked once per run."""
    return once_per_run("rollout", lambda: _plan_web_roll(tag, action="deploy"))


def rollback_request() -> RollRequest:
    """A roll back to the release before the current one, by the first web host's log:
    to its exact digest, whatever its tag points to now."""

    def plan() -> RollRequest:
        previous = _previous_version()
        return _plan_web_roll(previous.tag, action="rollback", digest=previous.digest)

    return once_per_run("rollout", plan)


def _plan_web_roll(tag: str | None, action: str, digest: str = "") -> RollRequest:
    """`digest`: roll to exactly this digest (a rollback); else the tag's digest now."""
    web_hosts = hosts_in_run("web")
    if not web_hosts:
        refuse(["--limit leaves no web host to roll"])
    first = web_hosts[0]
    data = first.data
    tag, errors = _checked_tag(data, tag)
    try:
        plan_batches([h.name for h in web_hosts], knob(data, "rollout_batch_size"))
    except PlanError as error:
        errors.append(str(error))
    errors += _unset(data, "app_image", "app_nginx_image")
    release_command, problem = [], None
    if knob(data, "rollout_release_command"):
        release_command, problem = command_words(
            knob(data, "rollout_release_command"), "rollout_release_command"
        )
    if problem:
        errors.append(problem)
    if errors:
        refuse(errors)

    settings = WebRollSettings.from_data(data, tag)
    check_load_balancers(settings, [h.name for h in web_hosts])
    settings = pinned(first, settings, digest)
    # Last of the checks: a refused run must not leave a lock behind it.
    take_deploy_lock(action, settings.version.short, [h.name for h in web_hosts])
    return RollRequest(
        WebRoll,
        settings,
        [h.name for h in web_hosts],
        [h.name for h in inventory.get_group("lb")],
        report_file=knob(data, "rollout_report_file"),
        release_command=tuple(release_command),
    )


def _previous_version() -> Version:
    web_hosts = hosts_in_run("web")
    if not web_hosts:
        refuse(["--limit leaves no web host to roll back"])
    first = web_hosts[0]
    current = first.get_fact(RunningAppVersion)
    log = first.get_fact(ReleaseLog, path=knob(first.data, "app_release_log"))
    previous = previous_release("\n".join(log), str(current) if current else None)
    if previous is None:
        refuse([f"{first.name} has no earlier release to roll back to (release log: {log})"])
    return Version.parse(previous)


def describe_web_plan(request: RollRequest) -> str:
    """The roll as it will run: batches, each host's current tag -> new tag, LB actions."""
    settings: WebRollSettings = request.settings
    batches = plan_batches(request.hosts, settings.batch_size)
    lbs = ", ".join(request.lb_hosts)
    lines = [
        f"deploykit: plan: roll {settings.app_image}:{settings.tag} "
        f"({len(batches)} batches), pinned to {settings.digest or '(no digest)'}"
    ]
    if request.release_command:
        lines.append(
            f"  release command: {shlex.join(request.release_command)} on "
            f"{request.hosts[0]} with {settings.version.short}, once, before any host is drained"
        )
    for number, batch in enumerate(batches, start=1):
        label = "canary" if number == 1 else f"batch {number}"
        for name in batch:
            current = inventory.get_host(name).get_fact(RunningAppVersion)
            shown = current.short if current else "(none)"
            same = " (no change)" if current == settings.version else ""
            lines.append(f"  {label:<9} {name:<16} {shown} -> {settings.version.short}{same}")
    readmit = ", health up" if settings.readmit_force_up else ""
    lines.append(
        f"  per host: drain on {lbs} (until 0 sessions, at most "
        f"{settings.drain_timeout_s:g}s), maint; start app + nginx, health check; "
        f"ready{readmit} on {lbs} (until UP, at most {settings.readmit_timeout_s:g}s); "
        "stop the old pair"
    )
    if settings.drain_last_server:
        lines.append(
            "  WARNING: rollout_drain_last_server: a host is drained even when it is the last "
            "server UP, and requests then get 503 while it is swapped"
        )
    else:
        lines.append(
            f"  never the last server UP: each LB waits up to {settings.last_server_wait_s:g}s "
            "for another one, else the roll refuses"
        )
    if len(request.hosts) == 1:
        lines.append(
            "  WARNING: one web host only: unless another server is UP, the roll refuses to "
            "drain it (rollout_drain_last_server = True drains it: requests then get 503 "
            "for a few seconds); zero downtime needs two or more"
        )
    if settings.canary_observe_s > 0:
        watched = "every host" if settings.observe_every_host else request.hosts[0]
        lines.append(
            f"  canary gate: {watched} watched in HAProxy for {settings.canary_observe_s:g}s "
            f"after re-admission (at most {settings.canary_max_error_rate:.0%} failed)"
        )
    if settings.rollback_on_failure:
        lines.append("  on failure: the failed host returns to its old pair; done hosts roll back")
    else:
        lines.append("  on failure: the failed host returns to its old pair; the roll stops")
    return "\n".join(lines)


def check_load_balancers(settings: WebRollSettings, web_hosts: list[str]) -> None:
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


def pinned(first_host, settings: RollSettings, digest: str = "") -> RollSettings:
    """The settings pinned to the digest every host will pull and run: the tag's digest
    now, as the registry answers the hosts' credentials, asked ONCE (from the first
    host: deploykit/registry_access.py says why from there), so that all hosts get the
    same bits even if the tag moves during the roll. A given `digest` (a rollback's
    exact release) is only checked to still exist."""
    answer = resolve_image(first_host, settings.app_image, digest or settings.tag)
    if answer.problem:
        refuse([answer.problem])
    return replace(settings, digest=answer.digest)


# -- the workers' roll -----------------------------------------------------------------


def worker_roll_request(
    tag: str | None = None, required: bool = True, digest: str = ""
) -> RollRequest | None:
    """The workers' roll to `tag` (default: --data image_tag), checked once per run;
    `digest`: to exactly that digest (the web roll's, when the workers follow it).
    None when no job host is in the run and `required` is False."""
    return once_per_run("workers", lambda: _plan_worker_roll(tag, required, digest))


def _plan_worker_roll(tag: str | None, required: bool, digest: str) -> RollRequest | None:
    job_hosts = hosts_in_run("job")
    if not job_hosts:
        if required:
            refuse(["--limit leaves no job host to roll (group 'job')"])
        return None
    first = job_hosts[0]
    data = first.data
    tag, errors = _checked_tag(data, tag)
    errors += _unset(data, "app_image")
    workers = knob(data, "jobs_workers_per_host")
    if not isinstance(workers, int) or workers < 1:
        errors.append(f"jobs_workers_per_host must be at least 1, got {workers!r}")
    command = knob(data, "jobs_command")
    if not command or not all(isinstance(part, str) for part in command):
        errors.append(f"jobs_command must be a non-empty list of strings, got {command!r}")
    if errors:
        refuse(errors)
    settings = pinned(first, WorkerRollSettings.from_data(data, tag), digest)
    # Already held when deploys/web.py rolls the workers after the web hosts.
    take_deploy_lock("jobs", settings.version.short, [h.name for h in job_hosts])
    return RollRequest(WorkerRoll, settings, [h.name for h in job_hosts])


def describe_worker_plan(request: RollRequest) -> str:
    settings: WorkerRollSettings = request.settings
    return (
        f"deploykit: plan: roll workers to {settings.image} on "
        f"{', '.join(request.hosts)}, one host at a time, "
        f"{settings.workers_per_host} per host; per worker: stop (SIGTERM, the job in hand "
        f"finishes, at most {settings.stop_timeout_s}s), start the new one, wait for "
        f"{settings.ready_line!r} (at most {settings.ready_timeout_s:g}s); on failure the old "
        "worker is started again and the roll stops"
    )
