"""Provision and harden every host, by group. Safe to run again: a second run changes nothing.

pyinfra -y inventories/sandbox.py deploys/provision.py
pyinfra inventories/staging.py deploys/provision.py --dry --diff
pyinfra -y inventories/staging.py deploys/provision.py --data only=redis   # one component
"""

from pyinfra import host, inventory, state

from deploykit.components.accessories import accessories, accessories_of, check_accessories
from deploykit.components.app import app_env_file, web_tls
from deploykit.components.central_logging import central_logging
from deploykit.components.common import common
from deploykit.components.docker import docker
from deploykit.components.haproxy import haproxy
from deploykit.components.hardening import hardening
from deploykit.components.postgres import postgres
from deploykit.components.redis import redis
from deploykit.components.scheduled_jobs import check_scheduled_jobs, scheduled_jobs
from deploykit.config import knob
from deploykit.preflight import preflight
from deploykit.provision_only import components_to_provision
from deploykit.rollout.lock import take_deploy_lock

preflight(required_groups=("lb", "web"), app_env_groups=("web", "job"))
check_accessories()
check_scheduled_jobs()
run = components_to_provision()
# Provision can restart dockerd, reload HAProxy (resetting the counters a canary gate
# reads), rewrite env files and restart Redis: never in the middle of a roll.
take_deploy_lock("provision", hosts=[h.name for h in inventory if state.is_host_in_limit(h)])

if "common" in run:
    common()
if "hardening" in run:
    hardening()

runs_app = bool({"web", "job"} & set(host.groups))
runs_containers = runs_app or bool(accessories_of(host))
if runs_containers and "docker" in run:
    docker()
if runs_app and "app_env" in run:
    # The same image everywhere: web and job hosts differ only by this file.
    app_env_file()
if runs_containers and "accessories" in run:
    accessories()
if "web" in host.groups and "web_tls" in run:
    web_tls()

if "lb" in host.groups and "haproxy" in run:
    haproxy()

if "db" in host.groups and "postgres" in run:
    postgres()

if knob(host.data, "redis_group") in host.groups and "redis" in run:
    redis()

if "central_logging" in run:
    central_logging(container_logs=runs_containers)

if "scheduled_jobs" in run:
    # Every host: one that no longer runs a job loses its timer.
    scheduled_jobs()
