import json
from types import SimpleNamespace

from deploykit.components.docker import DEFAULTS, daemon_json


def test_daemon_json_rotates_logs_by_default():
    settings = json.loads(daemon_json(SimpleNamespace(**DEFAULTS)))
    assert settings == {
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-file": "5", "max-size": "10m"},
    }


def test_daemon_json_lists_insecure_registries_when_set():
    data = SimpleNamespace(**{**DEFAULTS, "docker_insecure_registries": ["registry:5000"]})
    assert json.loads(daemon_json(data))["insecure-registries"] == ["registry:5000"]
