import pytest

from deploykit.firewall import FirewallMatrixError, FirewallRule, build_rules, parse_port
from deploykit.operations.config_file import render_template

ADDRESSES = {"lb": ["10.0.0.10"], "web": ["10.0.0.21", "10.0.0.22"], "job": ["10.0.0.31"]}
MATRIX = {
    "lb": {"80/tcp": ["any"], "443/tcp": ["any"]},
    "web": {"80/tcp": ["lb"]},
    "db": {"5432/tcp": ["web", "job"], "6379": ["web", "198.51.100.0/24"]},
}


def lookup(group):
    return ADDRESSES.get(group)


def test_roles_become_private_addresses():
    assert build_rules(["db"], MATRIX, lookup) == [
        FirewallRule(5432, "tcp", ("10.0.0.21", "10.0.0.22", "10.0.0.31"), ("job", "web")),
        FirewallRule(
            6379, "tcp", ("10.0.0.21", "10.0.0.22", "198.51.100.0/24"), ("198.51.100.0/24", "web")
        ),
    ]


def test_any_means_no_source_filter_and_wins_when_roles_overlap():
    rules = build_rules(["web", "lb"], MATRIX, lookup)
    assert rules == [
        FirewallRule(80, "tcp", (), ("any", "lb")),
        FirewallRule(443, "tcp", (), ("any",)),
    ]


def test_host_outside_the_matrix_gets_no_rules():
    assert build_rules(["job"], MATRIX, lookup) == []


def test_unknown_source_group_is_an_error():
    with pytest.raises(FirewallMatrixError, match="'wbe' is neither a group nor an address"):
        build_rules(["web"], {"web": {"80/tcp": ["wbe"]}}, lookup)


@pytest.mark.parametrize("spec", ["80/sctp", "http", "0/tcp", "70000/tcp"])
def test_bad_port_spec_is_an_error(spec):
    with pytest.raises(FirewallMatrixError, match="is not a port"):
        parse_port(spec)


def test_rendered_ruleset_filters_input_and_published_ports():
    rules = build_rules(["web"], MATRIX, lookup)
    text = render_template("firewall.nft.j2", rules=rules, ssh_sources=[])
    assert "table inet deploykit_firewall\ndelete table inet deploykit_firewall\n" in text
    assert "flush ruleset" not in text  # would wipe the Docker engine's NAT rules
    assert "        tcp dport 80 ip saddr { 10.0.0.10 } accept\n" in text
    assert (
        "        ct status dnat meta l4proto tcp ct original proto-dst 80 "
        "ip saddr { 10.0.0.10 } accept\n        ct status dnat drop\n" in text
    )
    assert "type filter hook input priority filter; policy drop;" in text


def test_ssh_sources_restrict_port_22():
    text = render_template("firewall.nft.j2", rules=[], ssh_sources=["198.51.100.0/24"])
    assert "tcp dport 22 ip saddr { 198.51.100.0/24 } accept" in text
