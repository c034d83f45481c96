"""What sshd may offer, and what would lock the deploy out. Pure: no pyinfra, no I/O.

The wanted algorithm lists are preferences: each is cut down to what the host's own
OpenSSH offers (``ssh -Q kex`` and friends, read on the host), so one setting serves
Debian 12 (OpenSSH 9.2) and Debian 13 (OpenSSH 10.0, which adds mlkem768x25519-sha256).
pyinfra connects through paramiko, so what remains must still leave paramiko one
algorithm of each kind, or the next run could not connect at all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from paramiko import Transport

# sshd_config keyword -> `ssh -Q` query giving what this OpenSSH build offers.
QUERIES = {
    "KexAlgorithms": "kex",
    "Ciphers": "cipher",
    "MACs": "mac",
    "HostKeyAlgorithms": "HostKeyAlgorithms",
    "PubkeyAcceptedAlgorithms": "PubkeyAcceptedAlgorithms",
}

# Host key file types -> the host key algorithms they serve.
HOST_KEY_ALGORITHMS = {
    "ed25519": ["ssh-ed25519"],
    "rsa": ["rsa-sha2-512", "rsa-sha2-256"],
    "ecdsa": ["ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"],
}
HOST_KEY_FILE = "/etc/ssh/ssh_host_{}_key"
# Every type OpenSSH may have generated (ssh-keygen -A): the unwanted ones are removed.
ALL_HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa", "dsa")

# An authorized_keys key type -> the signature algorithms it can log in with.
USER_KEY_SIGNATURES = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


class SshPolicyError(ValueError):
    pass


@dataclass(frozen=True)
class SshAlgorithms:
    """The final lists sshd is given, keyword -> algorithms, preference order kept."""

    lists: dict[str, list[str]]

    def get(self, keyword: str) -> list[str]:
        return self.lists.get(keyword, [])


def parse_offers(output: list[str]) -> dict[str, set[str]]:
    """`[kex]` headed sections of `ssh -Q` output -> {query: {algorithms}}."""
    offers: dict[str, set[str]] = {}
    section = None
    for line in output:
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            offers[section] = set()
        elif line and section is not None:
            offers[section].add(line)
    return offers


def choose(wanted: dict[str, list[str]], offers: dict[str, set[str]]) -> SshAlgorithms:
    """Each wanted list cut down to what the host offers. An empty wanted list leaves
    that keyword to OpenSSH's own default (the setting's off switch); a list of which
    the host offers nothing is an error, naming it."""
    lists: dict[str, list[str]] = {}
    for keyword, algorithms in wanted.items():
        if not algorithms:
            continue
        offered = offers.get(QUERIES[keyword], set())
        kept = [a for a in algorithms if a in offered]
        if not kept:
            raise SshPolicyError(
                f"{keyword}: this host's OpenSSH offers none of {', '.join(algorithms)}"
            )
        lists[keyword] = kept
    return SshAlgorithms(lists)


def paramiko_problems(chosen: SshAlgorithms, paramiko_offers: dict[str, tuple[str, ...]]):
    """Keywords whose final list leaves pyinfra's paramiko nothing it can negotiate."""
    problems = []
    for keyword, supported in paramiko_offers.items():
        final = chosen.get(keyword)
        if final and not set(final) & set(supported):
            problems.append(
                f"{keyword} {', '.join(final)}: paramiko (pyinfra's SSH client) supports "
                f"none of them ({', '.join(supported)}); the next run could not connect"
            )
    return problems


def paramiko_offers() -> dict[str, tuple[str, ...]]:
    """What the installed paramiko negotiates, by sshd_config keyword."""
    return {
        "KexAlgorithms": tuple(Transport._preferred_kex),
        "Ciphers": tuple(Transport._preferred_ciphers),
        "MACs": tuple(Transport._preferred_macs),
        "HostKeyAlgorithms": tuple(Transport._preferred_keys),
        "PubkeyAcceptedAlgorithms": tuple(Transport._preferred_pubkeys),
    }


def host_key_algorithms(types: list[str]) -> list[str]:
    unknown = [t for t in types if t not in HOST_KEY_ALGORITHMS]
    if unknown or not types:
        raise SshPolicyError(
            f"hardening_ssh_host_key_types {types!r}: choose from "
            f"{', '.join(HOST_KEY_ALGORITHMS)}"
        )
    return [algorithm for t in types for algorithm in HOST_KEY_ALGORITHMS[t]]


def key_type(public_key_line: str) -> str:
    """The type word of an authorized_keys line (options before it are skipped)."""
    words = public_key_line.split()
    for index, word in enumerate(words):
        if word.startswith(("ssh-", "ecdsa-", "sk-")) and index + 1 < len(words):
            return word
    return words[0] if words else ""


def rejected_keys(public_keys: list[str], accepted: list[str]) -> list[str]:
    """Key types among `public_keys` that no accepted algorithm can log in with."""
    if not accepted:  # OpenSSH's default list
        return []
    rejected = []
    for line in public_keys:
        kind = key_type(line)
        if not set(USER_KEY_SIGNATURES.get(kind, (kind,))) & set(accepted):
            rejected.append(kind)
    return sorted(set(rejected))


def address_in(address: str, sources: list[str]) -> bool:
    if "any" in sources:
        return True
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(source, strict=False) for source in sources)


def lockout_problems(
    *,
    user: str,
    allow_users: list[str],
    rejected_key_types: list[str],
    connection: tuple[str, int] | None,
    port: int,
    firewall_enabled: bool,
    ssh_sources: list[str],
) -> list[str]:
    """Why this configuration would shut the deploy user out, if it would.

    + connection: (client address, sshd port) of this very run, as the host sees it
      (SSH_CONNECTION); None when unknown
    """
    problems = []
    if user not in allow_users:
        problems.append(
            f"the deploy connects as {user!r}, which hardening_ssh_allow_users "
            f"({', '.join(allow_users) or 'empty'}) does not let in"
        )
    if rejected_key_types:
        problems.append(
            f"keys of type {', '.join(rejected_key_types)} (bootstrap's authorized keys, or "
            "ssh_key) could no longer log in: add their algorithm to "
            "hardening_ssh_pubkey_algorithms or replace them with ed25519 keys"
        )
    if firewall_enabled and not ssh_sources:
        problems.append("hardening_ssh_sources is empty: the firewall would close SSH to all")
    if connection is not None:
        client, server_port = connection
        if server_port != port:
            problems.append(
                f"this run reaches sshd on port {server_port}, but hardening_ssh_port is "
                f"{port}: sshd and the firewall would move away from this connection "
                "(move the port in two steps, by hand, with console access)"
            )
        if firewall_enabled and ssh_sources and not address_in(client, ssh_sources):
            problems.append(
                f"this run comes from {client}, outside hardening_ssh_sources "
                f"({', '.join(ssh_sources)}): the firewall would close SSH to it"
            )
    return problems
