"""Hardening: sshd locked down to the deploy user's keys, and a default-deny firewall.

The firewall lives in an nftables table of its own (``inet deploykit_firewall``) and
replaces only that table: Debian's stock ``/etc/nftables.conf`` begins with ``flush
ruleset``, which would also wipe the NAT rules of the host's Docker engine (published
ports, embedded DNS). A oneshot unit loads it at boot, before the network and Docker.
"""

from __future__ import annotations

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from ..firewall import firewall_rules_for
from ..operations.config_file import config_file, render_template

DEFAULTS = {
    # The only account sshd lets in; bootstrap creates it.
    "hardening_ssh_allow_users": ["deploy"],
    # Where SSH is accepted from: "any", or CIDRs such as "198.51.100.0/24".
    "hardening_ssh_sources": ["any"],
    # Role -> {"port/proto": [source roles or "any" or CIDRs]}: who may reach what.
    # A host gets the rules of every group it is in. Ports published by containers
    # (nginx on web hosts) are filtered the same way.
    "hardening_firewall_matrix": {},
    # Turn the firewall off (for example where a cloud security group does the job).
    "hardening_firewall_enabled": True,
}

FIREWALL_FILE = "/etc/deploykit/firewall.nft"
FIREWALL_UNIT = "deploykit-firewall.service"


@deploy("Hardening", data_defaults=DEFAULTS)
def hardening() -> None:
    sshd = config_file(
        name="Ensure sshd allows only the deploy user, by key",
        content=render_template(
            "sshd_hardening.conf.j2", allow_users=host.data.hardening_ssh_allow_users
        ),
        dest="/etc/ssh/sshd_config.d/10-deploykit-hardening.conf",
        mode=0o644,
        validate="/usr/sbin/sshd -t -f {path}",
    )
    systemd.service(
        name="Ensure sshd runs with the hardened configuration",
        service="ssh.service",
        running=True,
        enabled=True,
        reloaded=sshd.will_change,
    )

    if not host.data.hardening_firewall_enabled:
        return
    apt.packages(name="Ensure nftables is installed", packages=["nftables"], no_recommends=True)
    rules = firewall_rules_for(host, inventory, host.data.hardening_firewall_matrix)
    ruleset = config_file(
        name="Ensure the firewall rules are current",
        content=render_template(
            "firewall.nft.j2",
            rules=rules,
            ssh_sources=[s for s in host.data.hardening_ssh_sources if s != "any"],
        ),
        dest=FIREWALL_FILE,
        mode=0o600,
        validate="/usr/sbin/nft -c -f {path}",
    )
    unit = config_file(
        name="Ensure the firewall unit loads the rules at boot",
        content=render_template("deploykit-firewall.service.j2", firewall_file=FIREWALL_FILE),
        dest=f"/etc/systemd/system/{FIREWALL_UNIT}",
    )
    systemd.service(
        name="Ensure the firewall is active and enabled at boot",
        service=FIREWALL_UNIT,
        running=True,
        enabled=True,
        daemon_reload=unit.will_change,
        restarted=ruleset.will_change or unit.will_change,
    )
