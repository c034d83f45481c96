"""Provision and harden every host, by group. Safe to run again: a second run changes nothing.

pyinfra -y inventories/sandbox.py deploys/provision.py
pyinfra inventories/staging.py deploys/provision.py --dry --diff
"""

from pyinfra import host

from deploykit.components.central_logging import central_logging
from deploykit.components.common import common
from deploykit.components.docker import docker
from deploykit.components.haproxy import haproxy
from deploykit.components.hardening import hardening
from deploykit.preflight import preflight

preflight(required_groups=("lb", "web"))

common()
hardening()

runs_containers = bool({"web", "job"} & set(host.groups))
if runs_containers:
    docker()

if "lb" in host.groups:
    haproxy()

central_logging(container_logs=runs_containers)
