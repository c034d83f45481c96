"""The app's environment: Envfile, interpolation, composition and checks (pure)."""

import runpy

import pytest

from deploykit.appenv import (
    Declaration,
    EnvfileError,
    compose,
    env_file_values,
    interpolate,
    inventory_builtins,
    load_envfile,
    parse_envfile,
    type_problem,
)
from deploykit.paths import REPO_ROOT

ENVFILE = """
DATABASE_URL:
  type: url
  required: true
  description: the database
SECRET_KEY_BASE:
  type: string
  required: true
  description: signs sessions
DB_PASSWORD:
  description: the database password
WORKERS:
  type: int
  description: worker processes
DEBUG:
  type: bool
  description: debug pages
DB_HOST:
  description: the database host
"""
DECLARED = parse_envfile(ENVFILE, "Envfile.yml")
SECRETS = {"DB_PASSWORD": "pw-old-1234", "SECRET_KEY_BASE": "k3y-base-5678"}
BUILTINS = {"DB_HOST": "10.0.0.41", "WEB_HOST": "10.0.0.21"}
URL = "postgres://app:${DB_PASSWORD}@${DB_HOST}:5432/app"


def test_envfile_declarations_with_their_defaults():
    assert DECLARED["DATABASE_URL"] == Declaration("DATABASE_URL", "url", True, "the database")
    assert DECLARED["DB_PASSWORD"] == Declaration(
        "DB_PASSWORD", "string", False, "the database password"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("A: [", "Envfile.yml: not valid YAML"),
        ("- A", "Envfile.yml: expected a mapping"),
        ("a-b: {description: x}", "Envfile.yml: a-b: not a valid environment variable name"),
        ("A: {type: float, description: x}", "Envfile.yml: A: type 'float' is not one of"),
        ("A: {required: 'yes', description: x}", "A: required must be true or false"),
        ("A: {type: int}", "Envfile.yml: A: a description is required"),
        ("A: {description: x, default: 1}", "Envfile.yml: A: unknown field(s) default"),
    ],
)
def test_malformed_envfile_names_the_entry(text, message):
    with pytest.raises(EnvfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_envfile(text, "Envfile.yml")


def test_missing_envfile_is_named():
    with pytest.raises(EnvfileError, match="app/Nope.yml: the app's Envfile does not exist"):
        load_envfile("app/Nope.yml")


def test_builtins_are_the_first_host_of_each_group():
    groups = {"db": ["10.0.0.41", "10.0.0.42"], "web": ["10.0.0.21"], "job": [], "my-lb": ["1"]}
    assert inventory_builtins(groups) == {
        "DB_HOST": "10.0.0.41",
        "WEB_HOST": "10.0.0.21",
        "MY_LB_HOST": "1",
    }


def test_references_defaults_and_literal_dollars():
    values, used, problems = interpolate(
        {
            "URL": URL,
            "ALIAS": "${URL}",
            "MODE": "${UNSET:-fast}",
            "EMPTY": "",
            "FALLBACK": "${EMPTY:-x}",
            "PRICE": "$$5 and $${NOT}",
        },
        {**BUILTINS, **SECRETS},
    )
    assert problems == []
    assert values == {
        "URL": "postgres://app:pw-old-1234@10.0.0.41:5432/app",
        "ALIAS": "postgres://app:pw-old-1234@10.0.0.41:5432/app",
        "MODE": "fast",
        "EMPTY": "",
        "FALLBACK": "x",
        "PRICE": "$5 and ${NOT}",
    }
    # Through any chain of references: ALIAS was built from the password too.
    assert used["ALIAS"] == {"DB_PASSWORD", "DB_HOST"}
    assert used["MODE"] == set()


def test_explicit_values_override_builtins():
    values, _, problems = interpolate(
        {"DB_HOST": "db.internal", "URL": URL}, {**BUILTINS, **SECRETS}
    )
    assert problems == []
    assert values["URL"] == "postgres://app:pw-old-1234@db.internal:5432/app"


def test_undefined_reference_names_the_variable_where_it_is_used():
    values, _, problems = interpolate({"URL": "x://${DB_PASWORD}@h", "OK": "1"}, SECRETS)
    assert problems == [
        "app_env: URL refers to ${DB_PASWORD}, which is not defined (did you mean DB_PASSWORD?)"
    ]
    assert values == {"OK": "1"}


def test_a_cycle_is_reported_once_with_its_path():
    _, _, problems = interpolate({"A": "${B}", "B": "x${C}", "C": "${A}", "D": "${A}"}, {})
    assert problems == ["app_env: A refers to itself: A -> B -> C -> A"]
    _, _, problems = interpolate({"SELF": "${SELF:-x}"}, {})
    assert problems == ["app_env: SELF refers to itself: SELF -> SELF"]


def test_a_lone_dollar_is_an_error():
    _, _, problems = interpolate({"P": "a$b", "Q": "${bad-name}"}, {})
    assert problems == [
        "app_env: P has a $ that starts no ${NAME}; write $$ for a literal $",
        "app_env: Q has a $ that starts no ${NAME}; write $$ for a literal $",
    ]


def test_compose_settings_secrets_and_declared_builtins():
    env = compose({"DATABASE_URL": URL, "WORKERS": 4, "DEBUG": False}, SECRETS, BUILTINS, DECLARED)
    assert env.problems == []
    assert env.values == {
        "DATABASE_URL": "postgres://app:pw-old-1234@10.0.0.41:5432/app",
        "DB_HOST": "10.0.0.41",  # declared: lands in the file; WEB_HOST does not
        "DB_PASSWORD": "pw-old-1234",
        "DEBUG": "false",
        "SECRET_KEY_BASE": "k3y-base-5678",
        "WORKERS": "4",
    }
    assert env.secret_values == ["k3y-base-5678", "pw-old-1234"]
    assert env.sensitive_names == {"DATABASE_URL", "DB_PASSWORD", "SECRET_KEY_BASE"}


def test_secrets_are_taken_literally():
    env = compose({"DATABASE_URL": URL}, {**SECRETS, "DB_PASSWORD": "a$b${C}"}, BUILTINS, DECLARED)
    assert env.problems == []
    assert env.values["DB_PASSWORD"] == "a$b${C}"


def test_missing_required_and_wrong_types_are_named_without_secret_values():
    declared = {
        **DECLARED,
        "SECRET_KEY_BASE": Declaration("SECRET_KEY_BASE", "int", True, "signs sessions"),
    }
    env = compose(
        {"WORKERS": "abc", "DEBUG": "maybe", "TYPO": "1", "DATABASE_URL": "${DB_PASSWORD}"},
        SECRETS,
        BUILTINS,
        declared,
        secrets_source="secrets file s.env",
        envfile="app/Envfile.yml",
    )
    assert env.problems == [
        "DATABASE_URL (app_env) must be a URL (scheme://host...), got a secret value",
        "DEBUG (app_env) must be a bool (true/false, 1/0...), got 'maybe'",
        "SECRET_KEY_BASE (secrets file s.env) must be an int, got a secret value",
        "TYPO (app_env) is not declared in app/Envfile.yml",
        "WORKERS (app_env) must be an int, got 'abc'",
    ]
    env = compose({"DATABASE_URL": ""}, {}, BUILTINS, DECLARED)
    assert env.problems == [
        "DATABASE_URL is required (the database) but empty",
        "SECRET_KEY_BASE is required (signs sessions) but not set",
    ]


def test_a_name_in_both_settings_and_secrets_is_an_error():
    env = compose({"DB_PASSWORD": "x", "DATABASE_URL": URL}, SECRETS, BUILTINS, DECLARED)
    assert env.problems == [
        "DB_PASSWORD is set both in app_env and in the secrets file; keep one",
    ]


@pytest.mark.parametrize(
    "app_env, problem",
    [
        (["A=1"], "app_env must be a dict of NAME: value, got list"),
        ({"A B": "1"}, "app_env: 'A B' is not a valid environment variable name"),
        ({"WORKERS": ["1"]}, "app_env: WORKERS must be a string or a number, got ['1']"),
        ({"DEBUG": "a\nb"}, "DEBUG (app_env) spans lines, which an env file cannot hold"),
    ],
)
def test_malformed_settings(app_env, problem):
    assert problem in compose(app_env, SECRETS, {}, DECLARED).problems


@pytest.mark.parametrize(
    "kind, good, bad",
    [
        ("int", ["8", "-1", " 3"], ["abc", "1.5", "0x10"]),
        ("number", ["1.5", "3", "1e3"], ["abc", "1,5"]),
        ("bool", ["true", "Off", "1", "no"], ["maybe", "2"]),
        ("url", ["redis://:pw@h:6379/0", "https://x.example/a"], ["x", "h:abc", "pg://h:p0rt/"]),
        ("string", ["anything at all"], []),
    ],
)
def test_types(kind, good, bad):
    assert [value for value in good if type_problem(kind, value)] == []
    assert [value for value in bad if not type_problem(kind, value)] == []


def test_env_file_values_as_docker_reads_them():
    text = "# Managed\nA=1\nB='x y'\nC=a=b\nnot a line\n"
    assert env_file_values(text) == {"A": "1", "B": "'x y'", "C": "a=b"}


def test_repository_settings_compose_cleanly_with_the_app_envfile():
    """group_data/all.py's app_env against app/Envfile.yml, with sandbox-like secrets."""
    app_env = runpy.run_path(str(REPO_ROOT / "group_data" / "all.py"))["app_env"]
    secrets = {"DB_PASSWORD": "a1", "REDIS_PASSWORD": "b2", "SECRET_KEY_BASE": "c3"}
    env = compose(app_env, secrets, {"DB_HOST": "10.0.0.41"}, load_envfile("app/Envfile.yml"))
    assert env.problems == []
    assert env.values["DATABASE_URL"] == "postgres://app:a1@10.0.0.41:5432/app?sslmode=require"
    assert env.values["REDIS_URL"] == "redis://:b2@10.0.0.41:6379/0"
    assert {"DATABASE_URL", "REDIS_URL"} <= env.sensitive_names
