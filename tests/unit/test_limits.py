import pytest

from deploykit.limits import LimitMatchesNothing, check_limit, limit_patterns

GROUPS = {"lb": ["lb1"], "web": [("web1", {}), ("web2", {})], "job": []}


def test_limit_patterns_are_read_in_both_spellings_each_whole_as_pyinfra_does():
    argv = ["inv.py", "--limit", "web1", "--limit", "lb*", "--limit=db", "deploys/web.py"]
    assert limit_patterns(argv) == ["web1", "lb*", "db"]


@pytest.mark.parametrize("pattern", ["web1", "web*", "lb", "job", "staging"])
def test_patterns_matching_a_host_a_group_or_the_inventory_pass(pattern):
    check_limit(GROUPS, "inventories/staging.py", ["--limit", pattern])


def test_pattern_matching_nothing_is_an_error_naming_it():
    with pytest.raises(LimitMatchesNothing, match="--limit 'web9' matches no host or group"):
        check_limit(GROUPS, "inventories/staging.py", ["inv.py", "--limit", "web9"])


def test_comma_separated_limit_matches_nothing_in_pyinfra_and_says_so():
    # pyinfra 3.10 takes "web1,web2" as one pattern and would run nothing, exit 0.
    with pytest.raises(LimitMatchesNothing, match="does not split on commas: repeat --limit"):
        check_limit(GROUPS, "inventories/staging.py", ["inv.py", "--limit", "web1,web2"])


def test_no_limit_is_fine():
    check_limit(GROUPS, "inventories/staging.py", ["inv.py", "deploys/web.py"])
