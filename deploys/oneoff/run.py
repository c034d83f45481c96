"""Run a command once in a throwaway container of the app image, on one host, with the
app's env file and network and the tag that host runs; its output is shown and its
exit status is the run's.

    pyinfra -y inventories/sandbox.py deploys/oneoff/run.py \\
        --data oneoff_command='python3 /app/manage.py migrate'
    ... --data oneoff_host=web2 --data image_tag=v2   # another host, another tag
"""

from deploykit.preflight import preflight
from deploykit.rollout.oneoff import run_oneoff

preflight()
run_oneoff()
