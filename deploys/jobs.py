"""Roll the job workers to a new app image, job host by job host; each worker finishes
the job in hand before its replacement starts.

    pyinfra -y inventories/sandbox.py deploys/jobs.py --data image_tag=v2

Same image and tag as the web app (another command: jobs_command). Before any host is
touched: the settings, the tag and its presence in the registry are checked; then every
job host gets the env file and pulls the image at once; then the roll runs host by host.
See deploykit/rollout/workers.py.
"""

from pyinfra import host, logger
from pyinfra.operations import python

from deploykit.components.jobs import job_host
from deploykit.preflight import preflight
from deploykit.rollout.requests import describe_worker_plan, worker_roll_request
from deploykit.rollout.run import run_roll

preflight(required_groups=("job",))
request = worker_roll_request()

if host.name in request.hosts:
    job_host(image=request.settings.image)

if host.name == request.hosts[0]:
    # Printed while planning, so `--dry` shows it too (callbacks do not run in a dry run).
    logger.info(describe_worker_plan(request))
    python.call(
        name=f"Roll workers to {request.settings.image} across {', '.join(request.hosts)}",
        function=run_roll,
        request=request,
    )
