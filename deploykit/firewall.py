"""Turn the role-based firewall matrix of group_data into concrete rules for one host.

Containers on a host count as that host's own roles: a port is open to them only when
the matrix names one of the host's groups among its sources ("any" means any address
on the network, not the host's own containers). So a container on a web host cannot
reach that host's sshd, nor a port the matrix opens only to the load balancers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


class FirewallMatrixError(ValueError):
    pass


@dataclass(frozen=True)
class FirewallRule:
    port: int
    proto: str
    # Empty means from anywhere.
    sources: tuple[str, ...]
    # The roles the sources came from, for the comment in the rules file.
    roles: tuple[str, ...]
    # The host's own containers may reach it (one of the host's groups is a source).
    from_containers: bool = False

    @property
    def sources_v4(self) -> tuple[str, ...]:
        return split_families(self.sources)[0]

    @property
    def sources_v6(self) -> tuple[str, ...]:
        return split_families(self.sources)[1]


def accept_from(match: str, v4, v6) -> list[str]:
    """nftables accept rules for `match` from these sources (none: from anywhere), one
    per address family: `ip saddr` never matches IPv6, nor `ip6 saddr` IPv4."""
    if not v4 and not v6:
        return [f"{match} accept"]
    lines = [f"{match} ip saddr {{ {', '.join(v4)} }} accept"] if v4 else []
    if v6:
        lines.append(f"{match} ip6 saddr {{ {', '.join(v6)} }} accept")
    return lines


def split_families(sources) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IPv4 sources, IPv6 sources): nftables matches them with `ip` and `ip6` saddr."""
    v4 = tuple(s for s in sources if ipaddress.ip_network(s, strict=False).version == 4)
    v6 = tuple(s for s in sources if ipaddress.ip_network(s, strict=False).version == 6)
    return v4, v6


def parse_port(spec: str) -> tuple[int, str]:
    port_text, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp") or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise FirewallMatrixError(f"{spec!r} is not a port such as '5432/tcp'")
    return int(port_text), proto


def resolve_sources(sources: list[str], addresses_of_group) -> tuple[str, ...] | None:
    """Roles become their hosts' private addresses; CIDRs stay; "any" means no filter."""
    resolved: list[str] = []
    for source in sources:
        if source == "any":
            return None
        try:
            ipaddress.ip_network(source, strict=False)
        except ValueError:
            addresses = addresses_of_group(source)
            if addresses is None:
                raise FirewallMatrixError(f"source {source!r} is neither a group nor an address")
            resolved.extend(addresses)
        else:
            resolved.append(source)
    return tuple(sorted(set(resolved)))


def build_rules(groups: list[str], matrix: dict, addresses_of_group) -> list[FirewallRule]:
    rules: dict[tuple[int, str], FirewallRule] = {}
    for role in groups:
        for port_spec, sources in matrix.get(role, {}).items():
            port, proto = parse_port(port_spec)
            resolved = resolve_sources(list(sources), addresses_of_group)
            previous = rules.get((port, proto))
            if previous is not None and (resolved is None or not previous.sources):
                resolved = None
            elif previous is not None:
                resolved = tuple(sorted(set(previous.sources) | set(resolved or ())))
            roles = tuple(sorted(set(sources) | set(previous.roles if previous else ())))
            from_containers = bool(set(groups) & set(roles))
            rules[(port, proto)] = FirewallRule(port, proto, resolved or (), roles, from_containers)
    return [rules[key] for key in sorted(rules)]


def firewall_rules_for(host, inventory, matrix: dict) -> list[FirewallRule]:
    def addresses_of_group(name: str):
        group = inventory.get_group(name, default=None)
        if group is None:
            return None
        return [member.data.private_ip for member in group if member.data.get("private_ip")]

    return build_rules(list(host.groups), matrix, addresses_of_group)
