"""Roll a new app image through HAProxy, host by host, with no failed request.

    pyinfra -y inventories/sandbox.py deploys/web.py --data image_tag=v2

Before any host is touched: the settings, the tag's syntax and its presence in the
registry are checked; then every web host pulls the image at once; then the roll runs
host by host in inventory order (the first host alone, as the canary). See
deploykit/rollout/engine.py for the steps and why they run from one callback.
"""

from pyinfra import host, logger
from pyinfra.operations import python

from deploykit.components.app import app_host
from deploykit.operations.oneoff import oneoff_container
from deploykit.preflight import preflight
from deploykit.rollout.request import describe_plan, roll_web_hosts, rollout_request

preflight(required_groups=("lb", "web"), app_env_groups=("web",))
request = rollout_request()

if host.name in request.web_hosts:
    app_host(images=[request.settings.image, request.settings.nginx_image])

if host.name == request.web_hosts[0]:
    # Printed while planning, so `--dry` shows it too (callbacks do not run in a dry run).
    logger.info(describe_plan(request))
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
        name=f"Roll {request.settings.image} across {', '.join(request.web_hosts)}",
        function=roll_web_hosts,
        request=request,
    )
