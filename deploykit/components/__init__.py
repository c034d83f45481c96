"""One @deploy per service, each with documented DEFAULTS that group_data overrides."""

from . import app, bootstrap, common, docker, haproxy, hardening, redis, workers

# Every component's defaults: the settings schema that config.py checks group_data against.
COMPONENT_DEFAULTS: dict[str, dict] = {
    "app": app.DEFAULTS,
    "bootstrap": bootstrap.DEFAULTS,
    "common": common.DEFAULTS,
    "hardening": hardening.DEFAULTS,
    "docker": docker.DEFAULTS,
    "haproxy": haproxy.DEFAULTS,
    "redis": redis.DEFAULTS,
    "workers": workers.DEFAULTS,
}
