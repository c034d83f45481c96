"""The hardening component's pure parts: sshd's lists and the lockout checks, kernel
parameters, the facts' parsing, and the sysctl operation's exact commands."""

import subprocess

import pytest

from deploykit.components.hardening import DEFAULTS
from deploykit.hardening_facts import AptSecuritySuite, OpenSshOffers, SysctlValues, UnitStates
from deploykit.operations.config_file import render_template
from deploykit.operations.hardening import sysctl_plan, sysctl_values
from deploykit.ssh_policy import (
    SshPolicyError,
    choose,
    host_key_algorithms,
    lockout_problems,
    paramiko_offers,
    paramiko_problems,
    parse_offers,
    rejected_keys,
)
from tests.unit.fakes import FakeHost, command_texts, run_operation

# `ssh -Q` of Debian 12's OpenSSH 9.2 (trimmed) and Debian 13's 10.0 (the kex that matter).
BOOKWORM = {
    "kex": {
        "ecdh-sha2-nistp256",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com",
        "diffie-hellman-group14-sha256",
    },
    "cipher": {
        "aes128-ctr",
        "aes256-ctr",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-cbc",
    },
    "mac": {
        "hmac-sha1",
        "umac-64@openssh.com",
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com",
    },
    "HostKeyAlgorithms": {"ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512"},
    "PubkeyAcceptedAlgorithms": {
        "ssh-ed25519",
        "sk-ssh-ed25519@openssh.com",
        "rsa-sha2-512",
        "rsa-sha2-256",
        "ecdsa-sha2-nistp256",
    },
}
TRIXIE = {**BOOKWORM, "kex": BOOKWORM["kex"] | {"mlkem768x25519-sha256"}}


def wanted(**overrides):
    lists = {
        "KexAlgorithms": DEFAULTS["hardening_ssh_kex_algorithms"],
        "Ciphers": DEFAULTS["hardening_ssh_ciphers"],
        "MACs": DEFAULTS["hardening_ssh_macs"],
        "HostKeyAlgorithms": host_key_algorithms(DEFAULTS["hardening_ssh_host_key_types"]),
        "PubkeyAcceptedAlgorithms": DEFAULTS["hardening_ssh_pubkey_algorithms"],
    }
    return {**lists, **overrides}


def test_each_list_is_cut_to_what_the_hosts_openssh_offers():
    bookworm = choose(wanted(), BOOKWORM)
    assert bookworm.get("KexAlgorithms") == [
        "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
    ]
    assert choose(wanted(), TRIXIE).get("KexAlgorithms")[0] == "mlkem768x25519-sha256"
    assert bookworm.get("MACs") == [
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha2-256-etm@openssh.com",
    ]
    assert bookworm.get("HostKeyAlgorithms") == ["ssh-ed25519"]


def test_an_empty_list_leaves_openssh_its_default_and_an_unoffered_one_is_an_error():
    assert "Ciphers" not in choose(wanted(Ciphers=[]), BOOKWORM).lists
    with pytest.raises(SshPolicyError, match="MACs: this host's OpenSSH offers none of"):
        choose(wanted(MACs=["hmac-sha3-512"]), BOOKWORM)
    with pytest.raises(SshPolicyError, match="hardening_ssh_host_key_types"):
        host_key_algorithms(["dsa"])


def test_the_defaults_leave_paramiko_something_of_each_kind():
    assert paramiko_problems(choose(wanted(), BOOKWORM), paramiko_offers()) == []
    only_openssh = choose(wanted(KexAlgorithms=["sntrup761x25519-sha512"]), BOOKWORM)
    problems = paramiko_problems(only_openssh, paramiko_offers())
    assert len(problems) == 1 and problems[0].startswith("KexAlgorithms sntrup761x25519-sha512:")


def test_key_types_the_accepted_algorithms_refuse():
    keys = [
        "ssh-ed25519 AAAA alice",
        'from="10.0.0.1" ssh-rsa AAAA bob',
        "ecdsa-sha2-nistp256 AA c",
    ]
    accepted = DEFAULTS["hardening_ssh_pubkey_algorithms"]
    assert rejected_keys(keys, accepted) == ["ecdsa-sha2-nistp256"]
    assert rejected_keys(keys, ["ssh-ed25519"]) == ["ecdsa-sha2-nistp256", "ssh-rsa"]
    assert rejected_keys(keys, []) == []  # OpenSSH's own default accepts them


def lockout(**overrides):
    settings = dict(
        user="deploy",
        allow_users=["deploy"],
        rejected_key_types=[],
        connection=("172.21.0.1", 22),
        port=22,
        firewall_enabled=True,
        ssh_sources=["any"],
    )
    return lockout_problems(**{**settings, **overrides})


def test_a_safe_configuration_has_no_lockout_problem():
    assert lockout() == []
    assert lockout(ssh_sources=["172.21.0.0/16"]) == []
    assert lockout(connection=None) == []


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"allow_users": ["ops"]}, "the deploy connects as 'deploy', which"),
        ({"rejected_key_types": ["ssh-rsa"]}, "keys of type ssh-rsa"),
        ({"port": 2222}, "this run reaches sshd on port 22, but hardening_ssh_port is 2222"),
        ({"ssh_sources": ["198.51.100.0/24"]}, "this run comes from 172.21.0.1, outside"),
        ({"ssh_sources": []}, "hardening_ssh_sources is empty"),
    ],
)
def test_each_way_of_locking_the_deploy_out_is_named(overrides, problem):
    problems = lockout(**overrides)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_closed_source_list_does_not_matter_without_the_firewall():
    assert lockout(ssh_sources=["198.51.100.0/24"], firewall_enabled=False) == []


def test_sshd_template_lists_the_chosen_algorithms_and_session_limits():
    text = render_template(
        "sshd_hardening.conf.j2",
        port=22,
        allow_users=["deploy"],
        max_auth_tries=3,
        max_sessions=10,
        client_alive_interval=60,
        client_alive_count_max=3,
        banner="/etc/issue.net",
        host_keys=["/etc/ssh/ssh_host_ed25519_key"],
        required_rsa_size=True,
        algorithms=choose(wanted(), BOOKWORM).lists,
    )
    for line in (
        "Port 22",
        "DisableForwarding yes",
        "LogLevel VERBOSE",
        "MaxSessions 10",
        "Compression no",
        "Banner /etc/issue.net",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "RequiredRSASize 3072",
        "HostKeyAlgorithms ssh-ed25519",
        "MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com",
    ):
        assert f"\n{line}\n" in text, line


def test_openssh_offers_fact_reads_this_machines_ssh():
    output = subprocess.run(
        ["sh", "-c", OpenSshOffers().command()], capture_output=True, text=True, check=True
    ).stdout
    offers = OpenSshOffers().process(output.splitlines())
    assert "curve25519-sha256" in offers["kex"] and "aes256-ctr" in offers["cipher"]
    assert len(offers["version"]) == 1 and next(iter(offers["version"]))[0].isdigit()
    assert parse_offers(["[kex]", "a", "", "b", "[mac]"]) == {"kex": {"a", "b"}, "mac": set()}


def test_sysctl_values_fact_tells_writable_from_read_only(tmp_path):
    process = SysctlValues().process(
        ["net.ipv4.conf.all.rp_filter\twritable\t1", "kernel.kptr_restrict\tread-only\t0"]
    )
    assert process == {
        "net.ipv4.conf.all.rp_filter": ("1", "writable"),
        "kernel.kptr_restrict": ("0", "read-only"),
    }
    assert "net.ipv4.tcp_syncookies" in SysctlValues().command(["net.ipv4.tcp_syncookies"])


def test_security_suite_fact():
    assert AptSecuritySuite().process(["2"]) is True
    assert AptSecuritySuite().process(["0"]) is False


CURRENT = {
    "net.ipv4.conf.all.rp_filter": ("2", "writable"),
    "net.ipv4.conf.all.log_martians": ("1", "writable"),
    "kernel.kptr_restrict": ("0", "read-only"),
    "kernel.dmesg_restrict": ("1", "read-only"),
}
WANTED = {
    "net.ipv4.conf.all.rp_filter": 1,
    "net.ipv4.conf.all.log_martians": 1,
    "kernel.kptr_restrict": 2,
    "kernel.dmesg_restrict": 1,
    "net.core.bpf_jit_harden": 2,
}


def test_sysctl_plan_sets_what_it_can_and_names_what_it_cannot():
    to_set, unsettable = sysctl_plan(WANTED, CURRENT)
    assert to_set == {"net.ipv4.conf.all.rp_filter": "1"}
    assert unsettable == {
        "kernel.kptr_restrict": "read-only here, is 0",
        "net.core.bpf_jit_harden": "absent here",
    }


class SysctlHost(FakeHost):
    """A host whose SysctlValues fact (asked with a list of keys) is `current`."""

    def __init__(self, current):
        super().__init__()
        self.current = current

    def get_fact(self, fact_class, **kwargs):
        assert fact_class is SysctlValues
        return {key: self.current[key] for key in kwargs["keys"] if key in self.current}


def test_sysctl_operation_writes_then_checks_each_value():
    host = SysctlHost(CURRENT)
    commands = command_texts(run_operation(sysctl_values, host, values=WANTED))
    assert commands == [
        "sysctl -q -w net.ipv4.conf.all.rp_filter=1 && test "
        '"$(sysctl -n net.ipv4.conf.all.rp_filter | tr -s "\\t " " ")" = 1'
    ]


def test_sysctl_operation_is_a_noop_when_only_unsettable_keys_differ():
    current = {**CURRENT, "net.ipv4.conf.all.rp_filter": ("1", "writable")}
    host = SysctlHost(current)
    assert run_operation(sysctl_values, host, values=WANTED) == []
    assert host.noop_reason == "the kernel parameters this host can set are current"


def test_unit_states_keep_only_the_units_the_host_has():
    output = [
        "Id=auditd.service",
        "LoadState=loaded",
        "UnitFileState=disabled",
        "ActiveState=inactive",
        "",
        "Id=audit-rules.service",
        "LoadState=loaded",
        "UnitFileState=enabled",
        "ActiveState=failed",
        "",
        "Id=nothing.service",
        "LoadState=not-found",
        "UnitFileState=",
        "ActiveState=inactive",
    ]
    assert UnitStates().process(output) == {
        "auditd.service": ("disabled", "inactive"),
        "audit-rules.service": ("enabled", "failed"),
    }


def test_unit_states_asks_systemctl_for_exactly_those_units():
    command = UnitStates().command(units=("auditd.service", "audit-rules.service"))
    assert command == (
        "systemctl show --property Id,LoadState,UnitFileState,ActiveState "
        "auditd.service audit-rules.service 2>/dev/null || true"
    )
