"""Run the app's migrations once, on one host, with the tag it runs (an example of a
ready-made one-off: copy it for a reindex or a data fix).

    pyinfra -y inventories/sandbox.py deploys/oneoff/migrate.py
    ... --data oneoff_host=job1 --data image_tag=v2
"""

from pyinfra import host

from deploykit.oneoff import oneoff_request
from deploykit.operations.oneoff import oneoff_container
from deploykit.preflight import preflight

# The example app's migrations (app/web/manage.py); Rails would be bin/rails db:migrate.
MIGRATE = ["python3", "/app/manage.py", "migrate"]

preflight()
request = oneoff_request(command=MIGRATE)

if host.name == request.host:
    oneoff_container(
        name=f"Run the migrations once with {request.image}",
        command=request.command,
        image=request.image,
        network=request.network,
        env_file=request.env_file,
        what="migrations",
    )
