"""Scheduled jobs (the seed's cron jobs): each declared job becomes a systemd timer on ONE
host of its group, running a one-off container of the app image (the tag that host
runs, read when each run starts, so a workers' roll changes the next run) with the
app's env file and network.

A run never overlaps the previous one (systemd starts no second run of an active
service, and the run holds a lock), is stopped at its time limit, and its result is
kept on the host (`deploys/status.py` shows it); its output goes to the journal and so
to central logging. A job no longer declared for a host loses its timer there.
The commands and scripts: deploykit/commands/scheduled_jobs.py.
"""

from __future__ import annotations

import difflib
import re
import shlex

from pyinfra import host, inventory, state
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from ..commands import scheduled_jobs as commands
from ..config import command_words
from ..errors import refuse
from ..operations.config_file import config_file, render_template
from ..operations.scheduled_jobs import scheduled_job_removed
from .app import DEFAULTS as APP_DEFAULTS

DEFAULTS = {
    # Jobs by name, each {"schedule": systemd OnCalendar, such as "*-*-* 03:00:00" or
    # "*:0/15", "command": "python3 /app/manage.py sweep" (or a list of words), "group":
    # "job", "host": "" (a host of the group; "" is its first), "time_limit_s": 3600}.
    # Only schedule and command are required. A run uses the app image at the tag its
    # host runs, with the app's env file and network.
    "scheduled_jobs": {},
    # Where each job host keeps how every job's last run ended (deploys/status.py).
    "scheduled_jobs_state_dir": "/var/lib/deploykit/scheduled",
    # Seconds a run stopped at its time limit gets after SIGTERM, before SIGKILL.
    "scheduled_jobs_stop_timeout_s": 10,
}

JOB_KEYS = {"schedule", "command", "group", "host", "time_limit_s"}
# Where the app runs, with its env file and network: a job's host is in one of them.
APP_GROUPS = ("web", "job")
DEFAULT_GROUP = "job"
DEFAULT_TIME_LIMIT_S = 3600
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}\Z")
# OnCalendar's alphabet (weekdays, dates, times, ranges, repetitions, time zones): no
# quotes, no newline, nothing a unit file would read otherwise. systemd-analyze checks
# the meaning on the host before the timer is installed.
SCHEDULE = re.compile(r"[A-Za-z0-9 *,./:~_+-]+\Z")


def job_problems(name, spec, group_hosts) -> list[str]:
    """What is wrong with one declaration, each problem naming the job. `group_hosts`
    gives the names of a group's hosts (None: no such group)."""
    where = f"scheduled job {name!r}"
    if not isinstance(name, str) or not NAME.match(name):
        return [f"{where}: a name is lowercase letters, digits and '-' (at most 41)"]
    if not isinstance(spec, dict):
        return [f"{where}: must be a dict with at least schedule and command"]
    problems = []
    for key in sorted(set(spec) - JOB_KEYS):
        close = difflib.get_close_matches(key, sorted(JOB_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{where}: unknown key {key!r}{hint}")
    schedule = spec.get("schedule")
    if not isinstance(schedule, str) or not SCHEDULE.match(schedule):
        problems.append(
            f"{where}: schedule must be a systemd calendar expression such as "
            f"'*-*-* 03:00:00' or '*:0/15', got {schedule!r}"
        )
    if not spec.get("command"):
        problems.append(f"{where}: no command")
    else:
        _, problem = command_words(spec["command"], f"{where}: command")
        if problem:
            problems.append(problem)
    limit = spec.get("time_limit_s", DEFAULT_TIME_LIMIT_S)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        problems.append(f"{where}: time_limit_s must be a whole number of seconds, got {limit!r}")
    group = spec.get("group", DEFAULT_GROUP)
    members = group_hosts(group) if isinstance(group, str) else None
    if not members:
        problems.append(f"{where}: group {group!r} has no hosts in this inventory")
    elif spec.get("host") and spec["host"] not in members:
        problems.append(
            f"{where}: host {spec['host']!r} is not in group {group!r} " f"({', '.join(members)})"
        )
    return problems


def _group_hosts(group: str) -> list[str] | None:
    members = inventory.get_group(group, default=None)
    return [member.name for member in members] if members else None


_checked_states: set[int] = set()


def check_scheduled_jobs() -> None:
    """Every host's declarations, checked once per run while planning."""
    if id(state) in _checked_states:
        return
    _checked_states.add(id(state))
    problems: list[str] = []
    for target in inventory:
        declared = target.data.get("scheduled_jobs") or {}
        if not isinstance(declared, dict):
            problems.append(f"host {target.name}: scheduled_jobs must be a dict: name -> job")
            continue
        for name, spec in declared.items():
            found = job_problems(name, spec, _group_hosts)
            runner = None if found else inventory.get_host(_runner(spec))
            if runner is not None and not set(APP_GROUPS) & set(runner.groups):
                found.append(
                    f"scheduled job {name!r}: its host {runner.name} is in neither group web "
                    "nor job: jobs run where the app runs, with its env file and network"
                )
            problems += found
        if declared and not target.data.get("app_image"):
            problems.append("scheduled_jobs need app_image (group_data)")
    if problems:
        refuse(sorted(set(problems)))


def _runner(spec: dict) -> str | None:
    """The host a job runs on: the one it names, else the first of its group."""
    members = _group_hosts(spec.get("group", DEFAULT_GROUP)) or [None]
    return spec.get("host") or members[0]


def jobs_of(target) -> dict[str, dict]:
    """The declared jobs that run on `target`."""
    declared = target.data.get("scheduled_jobs") or {}
    return {name: spec for name, spec in declared.items() if _runner(spec) == target.name}


@deploy("Scheduled jobs", data_defaults=DEFAULTS)
def scheduled_jobs() -> None:
    check_scheduled_jobs()
    data = host.data
    mine = jobs_of(host)
    state_dir = data.scheduled_jobs_state_dir
    user = data.get("ssh_user") or "deploy"
    if mine:
        files.directory(
            name="Ensure the scheduled jobs' results folder belongs to the deploy user",
            path=state_dir,
            user=user,
            group=user,
            mode="0750",
        )
    for name, spec in sorted(mine.items()):
        unit = commands.unit_name(name)
        command = spec["command"]
        words = [str(w) for w in command] if isinstance(command, list) else shlex.split(command)
        limit = int(spec.get("time_limit_s", DEFAULT_TIME_LIMIT_S))
        stop_timeout = int(data.scheduled_jobs_stop_timeout_s)
        scripts = [
            config_file(
                name=f"Ensure scheduled job {name}'s run script is current",
                content=commands.run_script(
                    name,
                    data.app_image,
                    words,
                    network=data.get("app_network") or APP_DEFAULTS["app_network"],
                    env_file=data.get("app_env_file") or APP_DEFAULTS["app_env_file"],
                    state_dir=state_dir,
                    time_limit_s=limit,
                    stop_timeout_s=stop_timeout,
                ),
                dest=commands.run_script_path(name),
                mode=0o755,
                validate="sh -n {path}",
            ),
            config_file(
                name=f"Ensure scheduled job {name}'s finish script is current",
                content=commands.finish_script(name, state_dir=state_dir),
                dest=commands.finish_script_path(name),
                mode=0o755,
                validate="sh -n {path}",
            ),
        ]
        service = config_file(
            name=f"Ensure scheduled job {name}'s service is current",
            content=render_template(
                "deploykit-job.service.j2",
                job=name,
                unit=unit,
                user=user,
                run_script=commands.run_script_path(name),
                finish_script=commands.finish_script_path(name),
                # A safety net above the run script's own limit (`timeout`).
                start_timeout_s=limit + stop_timeout + commands.SYSTEMD_MARGIN_S,
                stop_timeout_s=commands.SYSTEMD_MARGIN_S,
                skipped=commands.SKIPPED,
            ),
            dest=f"{commands.SYSTEMD_DIR}/{unit}.service",
        )
        timer = config_file(
            name=f"Ensure scheduled job {name}'s timer is current",
            content=render_template(
                "deploykit-job.timer.j2", job=name, unit=unit, schedule=spec["schedule"]
            ),
            dest=f"{commands.SYSTEMD_DIR}/{unit}.timer",
            # The staged file's name is no unit name: its schedule is checked on its own.
            validate=f"systemd-analyze calendar '{spec['schedule']}' >/dev/null",
        )
        systemd.service(
            name=f"Ensure scheduled job {name} is on its schedule ({spec['schedule']})",
            service=f"{unit}.timer",
            running=True,
            enabled=True,
            daemon_reload=any(op.will_change for op in (*scripts, service, timer)),
            restarted=timer.will_change,
        )
    scheduled_job_removed(
        name="Ensure no timer runs here for a job no longer declared for this host",
        keep=sorted(mine),
    )
