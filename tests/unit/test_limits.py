import pytest

from deploykit.limits import LimitMatchesNothing, check_limit, limit_patterns

GROUPS = {"lb": ["lb1"], "web": [("web1", {}), ("web2", {})], "job": []}


def test_limit_patterns_are_read_in_both_spellings_and_split_on_commas():
    argv = ["inv.py", "--limit", "web1,lb*", "--limit=db", "deploys/web.py"]
    assert limit_patterns(argv) == ["web1", "lb*", "db"]


@pytest.mark.parametrize("pattern", ["web1", "web*", "lb", "job", "staging"])
def test_patterns_matching_a_host_a_group_or_the_inventory_pass(pattern):
    check_limit(GROUPS, "inventories/staging.py", ["--limit", pattern])


def test_pattern_matching_nothing_is_an_error_naming_it():
    with pytest.raises(LimitMatchesNothing, match="--limit 'web9' matches no host or group"):
        check_limit(GROUPS, "inventories/staging.py", ["inv.py", "--limit", "web1,web9"])


def test_no_limit_is_fine():
    check_limit(GROUPS, "inventories/staging.py", ["inv.py", "deploys/web.py"])
