"""One @deploy per service, each with documented DEFAULTS that group_data overrides."""

from . import (
    accessories,
    app,
    bootstrap,
    central_logging,
    common,
    docker,
    haproxy,
    hardening,
    postgres,
    redis,
    workers,
)

# Every component's defaults: the settings schema that config.py checks group_data against.
# Keys are module names; README's settings tables follow this order (bin/settings-doc).
COMPONENT_DEFAULTS: dict[str, dict] = {
    "bootstrap": bootstrap.DEFAULTS,
    "common": common.DEFAULTS,
    "hardening": hardening.DEFAULTS,
    "docker": docker.DEFAULTS,
    "haproxy": haproxy.DEFAULTS,
    "app": app.DEFAULTS,
    "central_logging": central_logging.DEFAULTS,
    "accessories": accessories.DEFAULTS,
    "postgres": postgres.DEFAULTS,
    "redis": redis.DEFAULTS,
    "workers": workers.DEFAULTS,
}
