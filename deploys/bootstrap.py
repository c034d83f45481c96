"""Run once, as root, on fresh hosts: creates the deploy user every later deploy uses.

pyinfra -y inventories/sandbox.py deploys/bootstrap.py --user root
"""

from deploykit.components.bootstrap import bootstrap
from deploykit.preflight import preflight

preflight()
bootstrap()
