"""Roll the web hosts back to the release before the current one, by the same rolling
mechanism as deploys/web.py (drain, swap, health, re-admit; no failed request).

    pyinfra -y inventories/sandbox.py deploys/rollback.py
"""

from pyinfra import host
from pyinfra.operations import python

from deploykit.components.app import app_host
from deploykit.preflight import preflight
from deploykit.rollout.requests import rollback_request
from deploykit.rollout.run import run_roll

preflight(required_groups=("lb", "web"), app_env_groups=("web",))
request = rollback_request()

if host.name in request.hosts:
    app_host(images=[request.settings.image, request.settings.nginx_image])

if host.name == request.hosts[0]:
    python.call(
        name=f"Roll back to {request.settings.image} across {', '.join(request.hosts)}",
        function=run_roll,
        request=request,
    )
