"""preflight's check of every host's composed environment, against a fake inventory."""

from deploykit.preflight import check_app_env
from deploykit.secrets import GIT_CRYPT_MAGIC
from tests.unit.fakes import FakeHost

ENVFILE = """
DATABASE_URL: {type: url, required: true, description: the database}
WORKERS: {type: int, description: worker processes}
DB_PASSWORD: {description: the database password}
"""


class FakeInventory:
    def __init__(self, hosts):
        self.hosts = hosts
        self.groups = {}
        for host in hosts:
            for group in host.groups:
                self.groups.setdefault(group, []).append(host)

    def __iter__(self):
        return iter(self.hosts)


def fleet(tmp_path, secrets: bytes, app_env: dict, web_env: dict | None = None):
    (tmp_path / "Envfile.yml").write_text(ENVFILE)
    (tmp_path / "secrets.env").write_bytes(secrets)
    data = {
        "app_env_spec": str(tmp_path / "Envfile.yml"),
        "app_secrets_file": str(tmp_path / "secrets.env"),
        "app_env": app_env,
    }
    hosts = [
        FakeHost("web1", data={**data, "private_ip": "10.0.0.21"}, groups=["web"]),
        FakeHost("web2", data={**data, "app_env": web_env or app_env}, groups=["web"]),
        FakeHost("job1", data=data, groups=["job"]),
        FakeHost("db1", data={"private_ip": "10.0.0.41"}, groups=["db"]),
    ]
    return FakeInventory(hosts)


GOOD = {"DATABASE_URL": "postgres://app:${DB_PASSWORD}@${DB_HOST}/app", "WORKERS": "2"}


def everywhere(host):
    return True


def test_a_good_environment_passes(tmp_path):
    inventory = fleet(tmp_path, b"DB_PASSWORD=hex123\n", GOOD)
    assert check_app_env(inventory, ("web", "job"), everywhere) == []


def test_each_problem_once_with_the_hosts_it_concerns(tmp_path):
    inventory = fleet(
        tmp_path, b"DB_PASSWORD=hex123\n", {**GOOD, "WORKERS": "abc"}, web_env={"WORKERS": "2"}
    )
    assert check_app_env(inventory, ("web", "job"), everywhere) == [
        "hosts web1, job1: WORKERS (app_env) must be an int, got 'abc'",
        "host web2: DATABASE_URL is required (the database) but not set",
    ]


def test_only_the_given_groups_and_hosts_in_the_limit(tmp_path):
    inventory = fleet(tmp_path, b"DB_PASSWORD=hex123\n", {**GOOD, "WORKERS": "abc"})
    only_web1 = check_app_env(inventory, ("web",), lambda host: host.name == "web1")
    assert only_web1 == ["host web1: WORKERS (app_env) must be an int, got 'abc'"]
    assert check_app_env(inventory, (), everywhere) == []


def test_a_locked_secrets_file_is_refused_with_how_to_unlock(tmp_path):
    inventory = fleet(tmp_path, GIT_CRYPT_MAGIC + b"\x01\x02ciphertext", GOOD)
    [problem] = check_app_env(inventory, ("web",), everywhere)
    assert problem.startswith("hosts web1, web2: secrets file ")
    assert "still encrypted by git-crypt; unlock the repository first: git-crypt unlock" in problem


def test_a_missing_secrets_file_is_refused(tmp_path):
    inventory = fleet(tmp_path, b"", GOOD)
    (tmp_path / "secrets.env").unlink()
    assert check_app_env(inventory, ("job",), everywhere) == [
        f"host job1: secrets file {tmp_path}/secrets.env does not exist"
    ]
