"""Run a command once in a throwaway container of the app image, on one host, with the
app's env file and network and the tag that host runs; its output is shown and its
exit status is the run's.

    pyinfra -y inventories/sandbox.py deploys/oneoff/run.py \\
        --data oneoff_command='python3 /app/manage.py migrate'
    ... --data oneoff_host=web2 --data image_tag=v2   # another host, another tag
"""

import shlex

from pyinfra import host

from deploykit.oneoff import oneoff_request
from deploykit.operations.oneoff import oneoff_container
from deploykit.preflight import preflight

preflight()
request = oneoff_request()

if host.name == request.host:
    oneoff_container(
        name=f"Run `{shlex.join(request.command)}` once with {request.image}",
        command=request.command,
        image=request.image,
        network=request.network,
        env_file=request.env_file,
    )
