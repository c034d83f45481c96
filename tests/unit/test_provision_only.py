"""deploys/provision.py --data only=...: which components run, and the refusal of an
unknown name (naming the known ones)."""

from __future__ import annotations

from deploykit.provision_only import PROVISION_COMPONENTS, parse_only


def test_nothing_given_runs_every_component():
    assert parse_only("") == (frozenset(PROVISION_COMPONENTS), [])
    assert parse_only(None) == (frozenset(PROVISION_COMPONENTS), [])


def test_one_name_or_several_run_those_only():
    assert parse_only("redis") == (frozenset({"redis"}), [])
    assert parse_only("redis, postgres") == (frozenset({"redis", "postgres"}), [])
    assert parse_only(["haproxy"]) == (frozenset({"haproxy"}), [])


def test_an_unknown_name_is_refused_naming_the_known_ones():
    _, problems = parse_only("rediss")
    assert problems == [
        "only: unknown component 'rediss' (did you mean 'redis'?); known: common, hardening, "
        "docker, app_env, accessories, web_tls, haproxy, postgres, redis, central_logging, "
        "scheduled_jobs"
    ]


def test_a_value_of_another_type_is_refused():
    assert parse_only(3)[1] == ["only must be a component name or a list of them, got 3"]
