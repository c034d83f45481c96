import pytest
from pyinfra.api.exceptions import OperationError

from deploykit.operations.users import group_member
from tests.unit.fakes import FakeHost, command_texts, run_operation

PROBE = "docker info --format '{{.ServerVersion}}'"


def users(groups):
    return {"deploy": {"group": "deploy", "groups": groups, "home": "/home/deploy"}}


def test_adding_the_connecting_user_reopens_the_session_and_probes():
    host = FakeHost(facts={"Users": users(["sudo"])}, data={"ssh_user": "deploy"})
    commands = run_operation(group_member, host, user="deploy", group="docker", probe=PROBE)
    assert command_texts(commands) == [
        "usermod --append --groups docker deploy",
        f"call reopen_ssh_session('deploy', {PROBE!r})",
    ]


def test_adding_another_user_needs_no_new_session():
    host = FakeHost(facts={"Users": users([])}, data={"ssh_user": "root"})
    commands = run_operation(group_member, host, user="deploy", group="docker")
    assert command_texts(commands) == ["usermod --append --groups docker deploy"]


def test_member_already_is_a_noop():
    host = FakeHost(facts={"Users": users(["docker"])}, data={"ssh_user": "deploy"})
    assert run_operation(group_member, host, user="deploy", group="docker", probe=PROBE) == []
    assert host.noop_reason == "deploy is in group docker"


def test_missing_user_says_to_bootstrap():
    host = FakeHost(facts={"Users": {}}, data={"ssh_user": "deploy"})
    with pytest.raises(OperationError, match="run deploys/bootstrap.py first"):
        run_operation(group_member, host, user="deploy", group="docker")
