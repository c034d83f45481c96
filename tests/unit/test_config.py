from types import SimpleNamespace

import pytest

from deploykit.config import (
    ConfigError,
    Schema,
    check_group_data,
    check_groups,
    check_overrides,
    check_values,
    group_data_keys,
)
from deploykit.paths import GROUP_DATA_DIR


@pytest.fixture
def schema():
    return Schema.build()


def test_repository_group_data_is_clean(schema):
    assert check_group_data(schema, GROUP_DATA_DIR) == []


def test_typo_names_key_file_line_and_suggestion(schema, tmp_path):
    (tmp_path / "web.py").write_text('ssh_user = "deploy"\n\ndocker_log_max_sizee = "5m"\n')
    errors = check_group_data(schema, tmp_path)
    assert len(errors) == 1
    assert errors[0].endswith(
        "web.py:3: unknown key 'docker_log_max_sizee' (did you mean 'docker_log_max_size'?)"
    )


def test_broken_group_data_file_is_reported_with_its_line(tmp_path):
    (tmp_path / "db.py").write_text("a = 1\nb = [\n")
    with pytest.raises(ConfigError, match=r"db\.py:2: "):
        group_data_keys(tmp_path / "db.py")


def test_pyinfra_global_arguments_are_allowed(schema, tmp_path):
    (tmp_path / "all.py").write_text("_sudo = True\nprivate_ip = '10.0.0.1'\n")
    assert check_group_data(schema, tmp_path) == []


def host(name, **data):
    return SimpleNamespace(name=name, data=SimpleNamespace(get=data.get))


def test_wrong_type_names_host_key_and_types(schema):
    errors = check_values(schema, [host("web1", docker_log_max_file="5")])
    assert errors == ["host web1: docker_log_max_file must be int, got str '5'"]


def test_bool_is_not_accepted_for_an_int_knob(schema):
    assert check_values(schema, [host("web1", docker_log_max_file=True)]) == [
        "host web1: docker_log_max_file must be int, got bool True"
    ]


def test_unknown_data_override(schema):
    assert check_overrides(schema, {"docker_live_restor": False}) == [
        "--data docker_live_restor: unknown key (did you mean 'docker_live_restore'?)"
    ]


class FakeInventory:
    def __init__(self, groups):
        self.groups = groups

    def get_group(self, name, default=None):
        return self.groups.get(name, default)


def test_missing_and_empty_groups_are_named():
    errors = check_groups(FakeInventory({"lb": ["lb1"], "web": []}), ("lb", "web", "db"))
    assert [e.split(": ", 1)[1] for e in errors] == [
        "no hosts in group 'web'; this deploy needs it",
        "no hosts in group 'db'; this deploy needs it",
    ]
