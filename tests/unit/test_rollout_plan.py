"""The order of a roll (canary alone, then batches) and the checks made before any host is
touched: batch sizes and image tags."""

from __future__ import annotations

import pytest

from deploykit.rollout.plan import PlanError, check_tag, parse_batch_size, plan_batches

HOSTS = [f"web{i}" for i in range(1, 9)]


# -- plan_batches -------------------------------------------------------------------------


def test_the_canary_goes_alone_then_one_host_at_a_time():
    assert plan_batches(["web1", "web2", "web3"], 1) == [["web1"], ["web2"], ["web3"]]


def test_the_canary_goes_alone_then_batches_in_inventory_order():
    assert plan_batches(HOSTS, 3) == [
        ["web1"],
        ["web2", "web3", "web4"],
        ["web5", "web6", "web7"],
        ["web8"],
    ]


def test_a_percentage_is_of_all_web_hosts():
    assert plan_batches(HOSTS, "25%") == [
        ["web1"],
        ["web2", "web3"],
        ["web4", "web5"],
        ["web6", "web7"],
        ["web8"],
    ]


def test_a_batch_of_everything_still_sends_the_canary_first():
    assert plan_batches(HOSTS, "100%") == [["web1"], HOSTS[1:]]
    assert plan_batches(HOSTS, 50) == [["web1"], HOSTS[1:]]


def test_a_single_host_is_only_the_canary():
    assert plan_batches(["web1"], "50%") == [["web1"]]


def test_no_host_to_roll_is_an_error():
    with pytest.raises(PlanError, match="no web hosts"):
        plan_batches([], 1)


def test_a_bad_batch_size_fails_the_plan():
    with pytest.raises(PlanError):
        plan_batches(HOSTS, "0%")


# -- parse_batch_size ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host_count", "size"),
    [
        (1, 8, 1),
        ("2", 8, 2),
        (" 3 ", 8, 3),
        (20, 8, 8),  # at most all hosts
        ("25%", 8, 2),
        ("100%", 8, 8),
        ("10%", 3, 1),  # rounds down, but at least one host
        ("33.3%", 9, 2),
        ("1%", 1, 1),
    ],
)
def test_parse_batch_size(value, host_count, size):
    assert parse_batch_size(value, host_count) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be at least 1"),
        ("0", "must be at least 1"),
        ("0%", "above 0% and at most 100%"),
        ("150%", "above 0% and at most 100%"),
        ("-5%", "above 0% and at most 100%"),
        ("nan%", "above 0% and at most 100%"),
        ("-1", "not a whole number or a percentage"),
        (-1, "not a whole number or a percentage"),
        ("abc", "not a whole number or a percentage"),
        ("1.5", "not a whole number or a percentage"),
        ("", "not a whole number or a percentage"),
        (None, "not a whole number or a percentage"),
        ("x%", "not a number or a percentage"),
        ("%", "not a number or a percentage"),
    ],
)
def test_parse_batch_size_rejects(value, message):
    with pytest.raises(PlanError, match=message):
        parse_batch_size(value, 8)


def test_plan_errors_are_value_errors_naming_the_input():
    with pytest.raises(ValueError, match="'abc'"):
        parse_batch_size("abc", 8)


# -- check_tag ----------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["v2", "1.2.3-rc_1", "latest", "_build", "9", "a" * 128])
def test_check_tag_accepts_docker_tags(tag):
    assert check_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    [
        "v 2",
        "-v",
        ".v",
        "a" * 129,
        "v2;rm",
        "v2/x",
        "v2:x",
        "",
        None,
        2,
        "v2\n",  # a trailing newline would reach the release log and the image name
    ],
)
def test_check_tag_rejects(tag):
    with pytest.raises(PlanError, match="not a valid Docker tag"):
        check_tag(tag)
