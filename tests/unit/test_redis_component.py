"""The Redis component's settings: read from host data and the secrets file, checked
while planning, and rendered into the config file Redis gets."""

from __future__ import annotations

import pytest

from deploykit.components.redis import DEFAULTS, redis_settings
from deploykit.errors import DeployRefused
from deploykit.operations.config_file import render_template
from tests.unit.fakes import FakeHost, fake_context


def settings_for(tmp_path, secrets="REDIS_PASSWORD=s3cret-value\n", **data):
    path = tmp_path / "secrets.env"
    path.write_text(secrets)
    host = FakeHost(
        "db1",
        data={**DEFAULTS, "private_ip": "10.0.0.8", "app_secrets_file": str(path), **data},
    )
    with fake_context(host):
        return redis_settings(host.data)


def test_redis_binds_to_loopback_and_the_private_address_with_the_secret_password(tmp_path):
    config = render_template("redis.conf.j2", **settings_for(tmp_path))
    lines = [line for line in config.splitlines() if line and not line.startswith("#")]
    assert "bind 127.0.0.1 10.0.0.8" in lines
    assert "requirepass s3cret-value" in lines
    assert "protected-mode yes" in lines
    assert "appendonly yes" in lines
    assert "save 3600 1 300 100 60 10000" in lines
    assert "maxmemory-policy noeviction" in lines
    assert not any(line.startswith("maxmemory ") for line in lines)


def test_a_memory_cap_is_rendered_when_set(tmp_path):
    config = render_template("redis.conf.j2", **settings_for(tmp_path, redis_maxmemory="256mb"))
    assert "\nmaxmemory 256mb\n" in config


@pytest.mark.parametrize(
    "secrets, data, message",
    [
        ("DB_PASSWORD=x\n", {}, "REDIS_PASSWORD is missing from the secrets file"),
        ("REDIS_PASSWORD='a b'\n", {}, "REDIS_PASSWORD must not contain spaces"),
        ("REDIS_PASSWORD=x\n", {"private_ip": ""}, "db1: private_ip is not set"),
        ("REDIS_PASSWORD=x\n", {"redis_appendfsync": "often"}, "redis_appendfsync must be"),
    ],
)
def test_bad_settings_are_refused_while_planning(tmp_path, secrets, data, message):
    with pytest.raises(DeployRefused) as refused:
        settings_for(tmp_path, secrets, **data)
    assert message in str(refused.value)


def test_valkey_gets_its_own_paths_in_the_same_settings(tmp_path):
    config = render_template("redis.conf.j2", **settings_for(tmp_path, redis_server="valkey"))
    lines = [line for line in config.splitlines() if line and not line.startswith("#")]
    assert "pidfile /run/valkey/valkey-server.pid" in lines
    assert "logfile /var/log/valkey/valkey-server.log" in lines
    assert "dir /var/lib/valkey" in lines
    assert "requirepass s3cret-value" in lines
    assert "Mode 0640 root:valkey" in config
