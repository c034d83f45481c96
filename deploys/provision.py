"""Provision and harden every host, by group. Safe to run again: a second run changes nothing.

pyinfra -y inventories/sandbox.py deploys/provision.py
pyinfra inventories/staging.py deploys/provision.py --dry --diff
"""

from pyinfra import host

from deploykit.components.accessories import accessories, accessories_of, check_accessories
from deploykit.components.app import app_env_file
from deploykit.components.central_logging import central_logging
from deploykit.components.common import common
from deploykit.components.docker import docker
from deploykit.components.haproxy import haproxy
from deploykit.components.hardening import hardening
from deploykit.components.postgres import postgres
from deploykit.components.redis import redis
from deploykit.config import knob
from deploykit.preflight import preflight

preflight(required_groups=("lb", "web"), app_env_groups=("web", "job"))
check_accessories()

common()
hardening()

runs_app = bool({"web", "job"} & set(host.groups))
runs_containers = runs_app or bool(accessories_of(host))
if runs_containers:
    docker()
if runs_app:
    # The same image everywhere: web and job hosts differ only by this file.
    app_env_file()
if runs_containers:
    accessories()

if "lb" in host.groups:
    haproxy()

if "db" in host.groups:
    postgres()

if knob(host.data, "redis_group") in host.groups:
    redis()

central_logging(container_logs=runs_containers)
