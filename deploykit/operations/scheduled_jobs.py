"""Scheduled jobs' timers: removed from a host once their job is no longer declared for it."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import StringCommand, operation

from ..commands import scheduled_jobs as commands
from ..facts import InstalledScheduledJobs


@operation()
def scheduled_job_removed(keep: list[str]):
    """
    Remove the timer, service and scripts of every scheduled job on the host not in ``keep``.

    + keep: the names of the jobs still declared for this host

    A run in progress of a removed job is stopped (its container removed by the finish
    script) before its units go.

    **Example:**

    .. code:: python

        scheduled_job_removed(
            name="Ensure no timer runs here for a job no longer declared for this host",
            keep=["nightly-report"],
        )
    """
    gone = [job for job in host.get_fact(InstalledScheduledJobs) if job not in keep]
    if not gone:
        host.noop("no timer of an undeclared scheduled job on this host")
        return
    for job in gone:
        unit = commands.unit_name(job)
        yield StringCommand(
            f"systemctl disable --now {shlex.quote(unit + '.timer')} && "
            f"systemctl stop {shlex.quote(unit + '.service')}"
        )
        yield StringCommand(
            "rm -f "
            + " ".join(
                shlex.quote(path)
                for path in (
                    f"{commands.SYSTEMD_DIR}/{unit}.timer",
                    f"{commands.SYSTEMD_DIR}/{unit}.service",
                    commands.run_script_path(job),
                    commands.finish_script_path(job),
                )
            )
        )
    yield StringCommand("systemctl daemon-reload")
