import pytest

from deploykit.firewall import (
    FirewallMatrixError,
    FirewallRule,
    accept_from,
    build_rules,
    parse_port,
)
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
        FirewallRule(80, "tcp", (), ("any", "lb"), from_containers=True),
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


def render(rules, **overrides):
    settings = dict(
        rules=rules,
        ssh_port=22,
        ssh_sources_v4=[],
        ssh_sources_v6=[],
        ssh_new_per_minute=60,
        ssh_burst=60,
        log_drops=True,
        accept_from=accept_from,
    )
    return render_template("firewall.nft.j2", **{**settings, **overrides})


def test_rendered_ruleset_filters_input_and_published_ports():
    rules = build_rules(["web"], MATRIX, lookup)
    text = render(rules)
    assert "table inet deploykit_firewall\ndelete table inet deploykit_firewall\n" in text
    assert "flush ruleset" not in text  # would wipe the Docker engine's NAT rules
    assert "        tcp dport 80 ip saddr { 10.0.0.10 } accept\n" in text
    assert (
        "        ct status dnat meta l4proto tcp ct original proto-dst 80 "
        "ip saddr { 10.0.0.10 } accept\n        ct status dnat drop\n" in text
    )
    assert "type filter hook input priority filter; policy drop;" in text
    assert "type filter hook forward priority filter; policy drop;" in text


def test_containers_reach_only_ports_open_to_their_hosts_roles():
    matrix = {"web": {"80/tcp": ["lb"], "9100/tcp": ["web", "lb"]}}
    text = render(build_rules(["web"], matrix, lookup))
    chain = text[text.index("chain from_containers {") :]
    chain = chain[: chain.index("}")]
    assert "tcp dport 9100 accept" in chain
    assert "dport 80" not in chain and "dport 22" not in chain
    assert chain.rstrip().endswith("drop")
    # Containers jump there before any SSH or matrix rule could accept them.
    input_chain = text[text.index("chain input") : text.index("chain from_containers")]
    assert input_chain.index('iifname "br-*" jump from_containers') < input_chain.index(
        "tcp dport 22"
    )
    assert (
        '        ct status dnat iifname "br-*" meta l4proto tcp ct original proto-dst 9100 '
        "accept\n" in text
    )


def test_every_source_filter_has_its_ipv6_counterpart():
    lookup_v6 = {"lb": ["10.0.0.10", "fd00::10"]}.get
    text = render(
        build_rules(["web"], {"web": {"80/tcp": ["lb"]}}, lookup_v6),
        ssh_sources_v4=["198.51.100.0/24"],
        ssh_sources_v6=["2001:db8::/32"],
    )
    assert "        tcp dport 80 ip saddr { 10.0.0.10 } accept\n" in text
    assert "        tcp dport 80 ip6 saddr { fd00::10 } accept\n" in text
    assert "tcp dport 22 ip saddr { 198.51.100.0/24 } accept" in text
    assert "tcp dport 22 ip6 saddr { 2001:db8::/32 } accept" in text
    assert "ct original proto-dst 80 ip6 saddr { fd00::10 } accept" in text
    assert "meta l4proto ipv6-icmp accept" in text and "nexthdr" not in text


def test_new_ssh_connections_are_rate_limited_per_source_on_the_configured_port():
    text = render([], ssh_port=2222, ssh_new_per_minute=30, ssh_burst=30)
    assert (
        "tcp dport 2222 ct state new add @ssh_new_v4 { ip saddr limit rate over 30/minute "
        "burst 30 packets } drop" in text
    )
    assert "add @ssh_new_v6 { ip6 saddr limit rate over 30/minute" in text
    assert "        tcp dport 2222 accept\n" in text
    assert "dport 22 " not in text
    assert "ssh_new" not in render([], ssh_new_per_minute=0)


def test_dropped_packets_are_logged_rate_limited_unless_turned_off():
    assert render([]).count('log prefix "deploykit-firewall') == 3
    assert "log prefix" not in render([], log_drops=False)


def test_ssh_sources_restrict_the_ssh_port():
    text = render([], ssh_sources_v4=["198.51.100.0/24"])
    assert "tcp dport 22 ip saddr { 198.51.100.0/24 } accept" in text
    assert "        tcp dport 22 accept\n" not in text
