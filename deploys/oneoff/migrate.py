"""Run the app's migrations once, on one host, with the tag it runs (an example of a
ready-made one-off: copy it for a reindex or a data fix).

    pyinfra -y inventories/sandbox.py deploys/oneoff/migrate.py
    ... --data oneoff_host=job1 --data image_tag=v2
"""

from deploykit.preflight import preflight
from deploykit.rollout.oneoff import run_oneoff

# The example app's migrations (app/web/manage.py); Rails would be bin/rails db:migrate.
MIGRATE = ["python3", "/app/manage.py", "migrate"]

preflight()
run_oneoff(MIGRATE, what="migrations")
