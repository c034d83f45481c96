"""The fleet at a glance; changes nothing.

    pyinfra inventories/sandbox.py deploys/status.py

For each web and job host: the running containers' tags and health, and the state of
the host's server on every load balancer with its current sessions; every scheduled
job with its schedule, last run and result (a failure marked `!!`) and next run; then
who holds the deploy lock and the last entries of the audit log.
"""

from pyinfra import host, inventory, logger

from deploykit.config import knob
from deploykit.facts import DeployContainers, HaproxyServers, ScheduledJobsStatus
from deploykit.preflight import preflight
from deploykit.rollout.lock import current_holder, lock_host, recent_audit
from deploykit.status import host_rows, job_rows, render_status

AUDIT_LINES = 10

preflight(required_groups=("lb",))

if host.name == lock_host().name:
    lbs = inventory.get_group("lb")
    lb_servers = {
        lb.name: lb.get_fact(
            HaproxyServers,
            socket=knob(lb.data, "haproxy_admin_socket"),
            backend=knob(lb.data, "haproxy_backend"),
        )
        for lb in lbs
    }
    rows, scheduled = [], []
    for group in ("web", "job"):
        for app_host in inventory.get_group(group, default=[]) or []:
            rows += host_rows(app_host.name, app_host.get_fact(DeployContainers), lb_servers)
            jobs = app_host.get_fact(
                ScheduledJobsStatus, state_dir=knob(app_host.data, "scheduled_jobs_state_dir")
            )
            scheduled += job_rows(app_host.name, jobs)
    text = render_status(
        rows, current_holder(), recent_audit(AUDIT_LINES), lock_host().name, scheduled
    )
    logger.info(text)
    # A report, not a deploy: stop here, before pyinfra asks to confirm zero changes.
    raise SystemExit(0)
