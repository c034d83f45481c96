"""Provision and harden every host, by group. Safe to run again: a second run changes nothing.

pyinfra -y inventories/sandbox.py deploys/provision.py
pyinfra inventories/staging.py deploys/provision.py --dry --diff
"""

from pyinfra import host

from deploykit.components.common import common
from deploykit.components.docker import docker
from deploykit.components.haproxy import haproxy
from deploykit.components.hardening import hardening
from deploykit.components.redis import redis
from deploykit.config import knob
from deploykit.preflight import preflight

preflight(required_groups=("lb", "web"))

common()
hardening()

if {"web", "job"} & set(host.groups):
    docker()

if "lb" in host.groups:
    haproxy()

if knob(host.data, "redis_group") in host.groups:
    redis()
