"""Roll a new app image through HAProxy, host by host, with no failed request.

    pyinfra -y inventories/sandbox.py deploys/web.py --data image_tag=v2

Before any host is touched: the settings, the tag's syntax and its presence in the
registry are checked; then every web host pulls the image at once; then the roll runs
host by host in inventory order (the first host alone, as the canary). See
deploykit/rollout/web.py for the steps, and docs/architecture.md for why they run
from one callback.
"""

from pyinfra import host, inventory, logger
from pyinfra.operations import python

from deploykit.components.app import app_host
from deploykit.components.jobs import job_host
from deploykit.config import knob
from deploykit.operations.oneoff import oneoff_container
from deploykit.preflight import preflight
from deploykit.rollout.requests import (
    describe_web_plan,
    describe_worker_plan,
    web_roll_request,
    worker_roll_request,
)
from deploykit.rollout.run import run_roll

preflight(required_groups=("lb", "web"), app_env_groups=("web", "job"))
request = web_roll_request()
# rollout_jobs_after_web: the job hosts in this run follow, once every web host is done.
jobs = None
if knob(inventory.get_host(request.hosts[0]).data, "rollout_jobs_after_web"):
    jobs = worker_roll_request(request.settings.tag, required=False, digest=request.settings.digest)

if host.name in request.hosts:
    app_host(images=[request.settings.image, request.settings.nginx_image])
elif jobs and host.name in jobs.hosts:
    job_host(image=jobs.settings.image)

if host.name == request.hosts[0]:
    # Printed while planning, so `--dry` shows it too (callbacks do not run in a dry run).
    logger.info(describe_web_plan(request))
    if request.release_command:
        # Fails the run on this host, so the roll below never starts: nothing drained.
        oneoff_container(
            name=f"Run the release command once with {request.settings.image}",
            command=list(request.release_command),
            image=request.settings.image,
            network=request.settings.network,
            env_file=request.settings.env_file,
            what="release command",
            on_failure="the roll did not start: no host was drained or changed",
        )
    python.call(
        name=f"Roll {request.settings.image} across {', '.join(request.hosts)}",
        function=run_roll,
        request=request,
    )
    if jobs:
        logger.info(describe_worker_plan(jobs) + " (after the web hosts)")
        # On the same host as the web roll: a failed web roll skips it.
        python.call(
            name=f"Roll workers to {jobs.settings.image} across {', '.join(jobs.hosts)}",
            function=run_roll,
            request=jobs,
        )
