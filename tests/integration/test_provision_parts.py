"""Provisioning one component alone (`--data only=...`), and hosts without python3."""

from __future__ import annotations

import pytest

from .sandbox_world import pyinfra

PROVISION = ("inventories/sandbox.py", "deploys/provision.py")
REDIS_CONF = "/etc/redis/redis.conf"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"


def read(fleet, host: str, path: str) -> str:
    code, text = fleet.sh(host, f"cat {path}")
    assert code == 0, text
    return text


def test_only_redis_provisions_redis_and_nothing_else(fleet):
    haproxy_before = read(fleet, "lb1", HAPROXY_CFG)
    try:
        # Both settings change, but only Redis is asked for.
        run = pyinfra(
            *PROVISION,
            "--data",
            "only=redis",
            "--data",
            "redis_maxmemory=64mb",
            "--data",
            "haproxy_check_rise=3",
        )
        assert run.returncode == 0, run.failure_excerpt()
        assert "maxmemory 64mb" in read(fleet, "db1", REDIS_CONF)
        assert read(fleet, "lb1", HAPROXY_CFG) == haproxy_before
        assert "HAProxy" not in run.output and "Docker" not in run.output, run.output[-4000:]
    finally:
        restored = pyinfra(*PROVISION, "--data", "only=redis")
        assert restored.returncode == 0, restored.failure_excerpt()
    assert "maxmemory 64mb" not in read(fleet, "db1", REDIS_CONF)


def test_an_unknown_component_is_refused_naming_the_known_ones(fleet):
    run = pyinfra(*PROVISION, "--data", "only=rediss")
    assert run.returncode != 0
    assert "refusing to run, nothing was changed" in run.output
    assert "only: unknown component 'rediss' (did you mean 'redis'?)" in run.output
    assert "known: common, hardening, docker," in run.output


@pytest.fixture
def job1_without_python3(fleet):
    """job1 with no `python3` on its PATH for the length of the test."""
    code, output = fleet.sh(
        "job1", "mv /usr/bin/python3 /usr/bin/python3.hidden && ! command -v python3"
    )
    assert code == 0, output
    try:
        yield "job1"
    finally:
        code, output = fleet.sh("job1", "mv /usr/bin/python3.hidden /usr/bin/python3")
        assert code == 0, output


def test_a_host_without_python3_is_provisioned(fleet, job1_without_python3):
    """A changed daemon.json is checked (and installed) without python3 on the host."""
    try:
        run = pyinfra(*PROVISION, "--limit", "job1", "--data", "docker_log_max_file=4")
        assert run.returncode == 0, run.failure_excerpt()
        code, output = fleet.sh("job1", 'jq -r \'."log-opts"."max-file"\' /etc/docker/daemon.json')
        assert (code, output.strip()) == (0, "4")
        assert fleet.sh("job1", "command -v python3")[0] != 0
    finally:
        restored = pyinfra(*PROVISION, "--limit", "job1")
        assert restored.returncode == 0, restored.failure_excerpt()
    code, output = fleet.sh("job1", 'jq -r \'."log-opts"."max-file"\' /etc/docker/daemon.json')
    assert (code, output.strip()) == (0, "5")
