"""What a workers' roll needs, read from host data and checked before any host is
touched, and the pyinfra callback that runs it (deploys/jobs.py, deploys/web.py)."""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import inventory, logger, state

from ..config import knob
from ..preflight import once_per_run, refuse
from .engine import RolloutFailed
from .lock import report_outcome, take_deploy_lock
from .plan import PlanError, check_tag
from .pyinfra_fleet import PyinfraFleet, finish_host_on_interrupt
from .report import summary_table
from .request import check_registry
from .workers import PHASES, WorkerRoll, WorkerRollSettings


@dataclass(frozen=True)
class JobsRequest:
    settings: WorkerRollSettings
    job_hosts: list[str]


def active_job_hosts() -> list:
    return [h for h in inventory.get_group("job", default=[]) or [] if state.is_host_in_limit(h)]


def jobs_request(tag: str | None = None, required: bool = True) -> JobsRequest | None:
    """The workers' roll to `tag` (default: --data image_tag), checked once per run.
    None when no job host is in the run and `required` is False."""
    return once_per_run("jobs", lambda: _plan(tag, required))


def _plan(tag: str | None, required: bool) -> JobsRequest | None:
    job_hosts = active_job_hosts()
    if not job_hosts:
        if required:
            refuse(["--limit leaves no job host to roll (group 'job')"])
        return None
    first = job_hosts[0]
    data = first.data
    errors = []
    try:
        tag = check_tag(tag if tag is not None else data.get("image_tag"))
    except PlanError as error:
        errors.append(str(error))
    if not data.get("app_image"):
        errors.append("app_image is not set (group_data)")
    workers = knob(data, "jobs_workers_per_host")
    if not isinstance(workers, int) or workers < 1:
        errors.append(f"jobs_workers_per_host must be at least 1, got {workers!r}")
    command = knob(data, "jobs_command")
    if not command or not all(isinstance(part, str) for part in command):
        errors.append(f"jobs_command must be a non-empty list of strings, got {command!r}")
    if errors:
        refuse(errors)
    settings = WorkerRollSettings(
        app_image=data.app_image,
        tag=tag,
        network=knob(data, "app_network"),
        env_file=knob(data, "app_env_file"),
        workers_per_host=workers,
        stop_timeout_s=int(knob(data, "jobs_stop_timeout_s")),
        ready_timeout_s=float(knob(data, "jobs_ready_timeout_s")),
        command=tuple(command),
        ready_line=knob(data, "jobs_ready_line"),
        keep_releases=int(knob(data, "rollout_keep_releases")),
        release_log=knob(data, "app_release_log"),
    )
    check_registry(first, settings)
    # Already held when deploys/web.py rolls the workers after the web hosts.
    take_deploy_lock("jobs", tag, [h.name for h in job_hosts])
    return JobsRequest(settings, [h.name for h in job_hosts])


def describe_jobs_plan(request: JobsRequest) -> str:
    settings = request.settings
    return (
        f"deploykit: plan: roll workers to {settings.image} on "
        f"{', '.join(request.job_hosts)}, one host at a time, "
        f"{settings.workers_per_host} per host; per worker: stop (SIGTERM, the job in hand "
        f"finishes, at most {settings.stop_timeout_s}s), start the new one, wait for "
        f"{settings.ready_line!r} (at most {settings.ready_timeout_s:g}s); on failure the old "
        "worker is started again and the roll stops"
    )


def roll_job_hosts(state, host, request: JobsRequest) -> bool:  # noqa: F811
    """The pyinfra callback: the whole workers' roll, once, from one host's operation."""
    fleet = PyinfraFleet(state)
    roll = WorkerRoll(fleet, request.settings, request.job_hosts)
    try:
        with finish_host_on_interrupt(roll, fleet):
            reports = roll.run()
    except RolloutFailed as failure:
        logger.info(summary_table(failure.reports, PHASES))
        report_outcome(result="failed", stopped_at=failure.host, reason=failure.reason)
        done = [r.host for r in failure.reports if r.result == "updated"]
        logger.error(
            f"deploykit: WORKER ROLL STOPPED at {failure.host}: {failure.reason}. "
            + (
                f"{failure.host}'s previous workers were started again. "
                if failure.touched
                else f"{failure.host} was not touched. "
            )
            + (f"Already on {request.settings.tag}: {', '.join(done)}." if done else "")
        )
        return False
    logger.info(summary_table(reports, PHASES))
    report_outcome(result="succeeded")
    return True
