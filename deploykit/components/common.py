"""Common base for every host: packages, time sync, unattended security upgrades.

Security updates install by themselves every day, except those of the services a roll
depends on (common_unattended_upgrades_skip): their packages restart the service, which
in the middle of a roll would cut it short. needrestart only lists what needs a restart.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from ..errors import refuse
from ..hardening_facts import AptSecuritySuite
from ..operations.config_file import config_file, render_template

DEFAULTS = {
    # Packages every host gets, on top of the distribution's minimal install.
    "common_packages": [
        "ca-certificates",
        "curl",
        "gnupg",
        "less",
        "netbase",
        "nftables",
        "sudo",
        "vim-tiny",
        # Which services need a restart after an upgrade (listed, never restarted),
        # what changed in an upgrade, and checksums of installed files.
        "needrestart",
        "apt-listchanges",
        "debsums",
    ],
    # Refuse to provision a host whose apt sources lack the security suite
    # (bookworm-security, trixie-security...): it would never get security updates.
    "common_require_security_suite": True,
    # Seconds an apt package list stays fresh before `apt-get update` runs again.
    "common_apt_cache_seconds": 3600,
    # NTP servers for systemd-timesyncd (skipped by systemd itself inside containers).
    "common_ntp_servers": ["0.debian.pool.ntp.org", "1.debian.pool.ntp.org"],
    # Install security updates automatically, every day.
    "common_unattended_upgrades": True,
    # Packages unattended upgrades leave alone (Python regular expressions, matched at
    # the start of the name): upgrading them restarts dockerd, HAProxy, PostgreSQL or
    # Redis, which must not happen in the middle of a roll. Upgrade them in a window:
    # apt-get install --only-upgrade docker.io (see README: Hardening).
    "common_unattended_upgrades_skip": [
        "docker.io",
        "docker-ce",
        "containerd",
        "runc",
        "haproxy",
        "postgresql-",
        "redis-server",
    ],
    # Reboot automatically at this time when an upgrade asks for it; "" never reboots.
    "common_unattended_reboot_time": "",
    # IANA time zone of every host.
    "common_timezone": "Etc/UTC",
}


@deploy("Common base", data_defaults=DEFAULTS)
def common() -> None:
    if host.data.common_require_security_suite and not host.get_fact(AptSecuritySuite):
        refuse(
            [
                f"host {host.name}: apt's sources have no security suite (such as "
                "bookworm-security), so it would never get security updates; add it, or "
                "set common_require_security_suite = False"
            ]
        )
    config_file(
        # Before the package: its first run, in this very install, already only lists.
        name="Ensure needrestart lists services to restart but never restarts them",
        content=(
            "# Managed by deploykit (deploykit/components/common.py): a restart of dockerd,\n"
            "# HAProxy or PostgreSQL belongs to the operator, never to an upgrade.\n"
            "$nrconf{restart} = 'l';\n"
        ),
        dest="/etc/needrestart/conf.d/60-deploykit.conf",
    )
    apt.update(
        name="Ensure the apt package lists are fresh",
        cache_time=host.data.common_apt_cache_seconds,
    )
    packages = list(host.data.common_packages) + ["systemd-timesyncd"]
    if host.data.common_unattended_upgrades:
        packages.append("unattended-upgrades")
    apt.packages(
        name="Ensure the base packages are installed",
        packages=packages,
        no_recommends=True,
    )
    files.link(
        name=f"Ensure the time zone is {host.data.common_timezone}",
        path="/etc/localtime",
        target=f"/usr/share/zoneinfo/{host.data.common_timezone}",
    )
    timesyncd = config_file(
        name="Ensure systemd-timesyncd uses the configured NTP servers",
        content=render_template("timesyncd.conf.j2", ntp_servers=host.data.common_ntp_servers),
        dest="/etc/systemd/timesyncd.conf.d/deploykit.conf",
    )
    systemd.service(
        name="Ensure systemd-timesyncd is enabled",
        service="systemd-timesyncd.service",
        enabled=True,
        # Containers (the sandbox) skip it by ConditionVirtualization; VMs run it.
        running=None,
        restarted=timesyncd.will_change,
    )
    if host.data.common_unattended_upgrades:
        config_file(
            name="Ensure unattended-upgrades installs security updates daily",
            content=render_template(
                "unattended-upgrades.j2",
                reboot_time=host.data.common_unattended_reboot_time,
                skip=host.data.common_unattended_upgrades_skip,
            ),
            dest="/etc/apt/apt.conf.d/52deploykit-unattended-upgrades",
        )
        systemd.service(
            name="Ensure the daily apt timers are active",
            service="apt-daily-upgrade.timer",
            running=True,
            enabled=True,
        )
