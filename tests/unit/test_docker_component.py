import json
from types import SimpleNamespace

from deploykit.components.docker import DEFAULTS, daemon_json


def test_daemon_json_rotates_logs_and_hardens_containers_by_default():
    settings = json.loads(daemon_json(SimpleNamespace(**DEFAULTS)))
    assert settings == {
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-file": "5", "max-size": "10m"},
        "no-new-privileges": True,
        "icc": False,
        "default-ulimits": {"core": {"Name": "core", "Hard": 0, "Soft": 0}},
    }


def test_daemon_json_hardening_can_be_turned_off():
    data = SimpleNamespace(
        **{
            **DEFAULTS,
            "docker_no_new_privileges": False,
            "docker_icc": True,
            "docker_core_dumps": True,
        }
    )
    settings = json.loads(daemon_json(data))
    assert settings["no-new-privileges"] is False and settings["icc"] is True
    assert "default-ulimits" not in settings


def test_daemon_json_lists_insecure_registries_when_set():
    data = SimpleNamespace(**{**DEFAULTS, "docker_insecure_registries": ["registry:5000"]})
    assert json.loads(daemon_json(data))["insecure-registries"] == ["registry:5000"]


def test_registry_ca_files_are_read_and_checked(tmp_path):
    from deploykit.components.docker import registry_ca_certificates
    from sandbox.tls import ensure_ca

    ensure_ca(tmp_path / "ca.crt", tmp_path / "ca.key")
    (tmp_path / "not-a-cert.crt").write_text("hello\n")
    files = {
        "registry:5000": str(tmp_path / "ca.crt"),
        "other:443": str(tmp_path / "missing.crt"),
        "third.example": str(tmp_path / "not-a-cert.crt"),
        "https://bad/": str(tmp_path / "ca.crt"),
    }
    data = SimpleNamespace(**{**DEFAULTS, "docker_registry_ca_files": files})
    found, problems = registry_ca_certificates(data)
    assert found == {"registry:5000": (tmp_path / "ca.crt").read_text()}
    assert problems == [
        f"docker_registry_ca_files['other:443']: {tmp_path}/missing.crt does not exist",
        f"docker_registry_ca_files['third.example']: {tmp_path}/not-a-cert.crt holds no PEM "
        "certificate",
        "docker_registry_ca_files['https://bad/']: the key must be a registry host[:port]",
    ]
