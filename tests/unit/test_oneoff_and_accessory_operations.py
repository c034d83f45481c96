"""The one-off and accessory operations against a fake host: the exact commands they
yield, or the no-op they leave; the accessory declaration checks; one-off commands."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from deploykit.components.accessories import accessories_of, spec_hash, spec_problems
from deploykit.config import command_words
from deploykit.operations.accessories import accessory_container, accessory_removed
from deploykit.operations.oneoff import oneoff_container, run_and_report
from tests.unit.fakes import FakeHost, command_texts, run_operation

RUN = "docker run --detach --name accessory-search ... elasticsearch:8"
STOP = "docker stop --time 30 accessory-search >/dev/null; docker rm --force accessory-search"


def test_oneoff_container_runs_one_callback_with_the_whole_script():
    host = FakeHost()
    commands = run_operation(
        oneoff_container,
        host,
        command=["sh", "-c", "exit 3"],
        image="r/app:v2",
        network="n",
        env_file="/e",
        what="release command",
        on_failure="nothing drained",
    )
    assert len(commands) == 1
    assert commands[0].function is run_and_report
    assert commands[0].args == (
        "docker run --rm --env-file /e --network n --label io.deploykit.oneoff=oneoff"
        " r/app:v2 sh -c 'exit 3'",
        "release command `sh -c 'exit 3'` on web1 with r/app:v2",
        "nothing drained",
    )


def accessory_host(containers):
    return FakeHost(name="job1", facts={"AccessoryContainers": containers})


def ensure(host, spec="new"):
    return command_texts(
        run_operation(accessory_container, host, accessory="search", spec=spec, run_command=RUN)
    )


def test_missing_accessory_is_created():
    assert ensure(accessory_host({})) == [RUN]


def test_changed_accessory_is_stopped_then_recreated():
    host = accessory_host({"accessory-search": ("search", "old", "running")})
    assert ensure(host) == [STOP, RUN]


def test_stopped_accessory_of_the_same_spec_is_started():
    host = accessory_host({"accessory-search": ("search", "new", "exited")})
    assert ensure(host) == ["docker start accessory-search"]


def test_running_accessory_of_the_same_spec_is_left_alone():
    host = accessory_host({"accessory-search": ("search", "new", "running")})
    assert ensure(host) == []
    assert host.noop_reason == "accessory search runs as declared"


def test_undeclared_accessories_are_removed():
    host = accessory_host(
        {
            "accessory-search": ("search", "a", "running"),
            "accessory-cache": ("cache", "b", "exited"),
        }
    )
    texts = command_texts(run_operation(accessory_removed, host, keep=["accessory-search"]))
    assert texts == [
        "docker stop --time 30 accessory-cache >/dev/null; docker rm --force accessory-cache"
    ]
    host = accessory_host({"accessory-search": ("search", "a", "running")})
    assert run_operation(accessory_removed, host, keep=["accessory-search"]) == []
    assert host.noop_reason == "no undeclared accessory container"


# -- declarations ---------------------------------------------------------------------------

TARGETS = {"job", "job1", "web"}


def problems(spec, name="search", secret_names=None):
    return spec_problems(name, spec, lambda target: target in TARGETS, secret_names)


def test_a_full_declaration_is_fine():
    spec = {
        "image": "elasticsearch:8",
        "hosts": ["job"],
        "ports": ["9200:9200", "127.0.0.1:9300:9300/tcp"],
        "volumes": ["search-data:/usr/share/elasticsearch/data", "/srv/x:/x:ro"],
        "env": {"discovery.type": "single-node", "PORT": 9200},
        "secrets": ["ELASTIC_PASSWORD"],
        "command": ["bin/elasticsearch"],
    }
    assert problems(spec, secret_names={"ELASTIC_PASSWORD"}) == []


def test_bad_declarations_name_the_accessory_and_the_problem():
    assert problems({"hosts": ["job9"], "port": ["9200"], "volumes": ["data"]}) == [
        "accessory 'search': unknown key 'port' (did you mean 'ports'?)",
        "accessory 'search': no image",
        "accessory 'search': 'job9' is neither a host nor a group of this inventory",
        "accessory 'search': volumes 'data': expected 'search-data:/usr/share/elasticsearch/data'",
    ]
    assert problems({"image": "x", "hosts": "job"}) == [
        "accessory 'search': hosts must list host or group names"
    ]
    assert problems(
        {"image": "x", "hosts": ["job"], "ports": ["http"], "env": {"A": True}, "command": "x"}
    ) == [
        "accessory 'search': ports 'http': expected '9200:9200'",
        "accessory 'search': env must map names to strings",
        "accessory 'search': command must be a list of words",
    ]
    assert problems({"image": "x", "hosts": ["job"], "secrets": ["NOPE"]}, secret_names=set()) == [
        "accessory 'search': secrets NOPE not in app_secrets_file"
    ]
    assert problems("elasticsearch", name="Search!") == [
        "accessory 'Search!': a name is lowercase letters, digits, '.', '_' or '-'"
    ]


def test_the_staging_declaration_is_valid():
    path = Path(__file__).resolve().parents[2] / "group_data" / "staging.py"
    tree = ast.parse(path.read_text())
    declared = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "accessories"
    )
    for name, spec in declared.items():
        assert problems(spec, name=name) == []


def test_accessories_of_a_host_by_name_or_group():
    declared = {
        "search": {"image": "x", "hosts": ["job"]},
        "cache": {"image": "y", "hosts": ["web2"]},
    }
    job1 = FakeHost(name="job1", groups=["job", "staging"], data={"accessories": declared})
    web2 = FakeHost(name="web2", groups=["web"], data={"accessories": declared})
    assert list(accessories_of(job1)) == ["search"]
    assert list(accessories_of(web2)) == ["cache"]
    assert accessories_of(FakeHost(name="lb1", groups=["lb"])) == {}


def test_spec_hash_changes_with_the_run_line_and_the_env_file():
    assert spec_hash("run a", "A=1\n") == spec_hash("run a", "A=1\n")
    assert len(spec_hash("run a", "A=1\n")) == 16
    assert spec_hash("run a", "A=1\n") != spec_hash("run a", "A=2\n")
    assert spec_hash("run a", "A=1\n") != spec_hash("run b", "A=1\n")


# -- one-off commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, words",
    [
        ("python3 /app/manage.py migrate", ["python3", "/app/manage.py", "migrate"]),
        ("sh -c 'exit 3'", ["sh", "-c", "exit 3"]),
        (["sh", "-c", "echo $HOME"], ["sh", "-c", "echo $HOME"]),
    ],
)
def test_command_words(value, words):
    assert command_words(value, "oneoff_command") == (words, None)


@pytest.mark.parametrize(
    "value, problem",
    [
        ("", "oneoff_command is empty: give the command to run, e.g. --data oneoff_command='...'"),
        (
            None,
            "oneoff_command is empty: give the command to run, e.g. --data oneoff_command='...'",
        ),
        ("sh -c 'x", 'oneoff_command: cannot split "sh -c \'x" into words: No closing quotation'),
        (3, "oneoff_command must be a string or a list of words, got 3"),
    ],
)
def test_command_words_refusals(value, problem):
    assert command_words(value, "oneoff_command") == ([], problem)
