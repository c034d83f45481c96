"""Common base for every host: packages, time sync, unattended security upgrades."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

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
    ],
    # Seconds an apt package list stays fresh before `apt-get update` runs again.
    "common_apt_cache_seconds": 3600,
    # NTP servers for systemd-timesyncd (skipped by systemd itself inside containers).
    "common_ntp_servers": ["0.debian.pool.ntp.org", "1.debian.pool.ntp.org"],
    # Install security updates automatically, every day.
    "common_unattended_upgrades": True,
    # Reboot automatically at this time when an upgrade asks for it; "" never reboots.
    "common_unattended_reboot_time": "",
    # IANA time zone of every host.
    "common_timezone": "Etc/UTC",
}


@deploy("Common base", data_defaults=DEFAULTS)
def common() -> None:
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
            ),
            dest="/etc/apt/apt.conf.d/52deploykit-unattended-upgrades",
        )
        systemd.service(
            name="Ensure the daily apt timers are active",
            service="apt-daily-upgrade.timer",
            running=True,
            enabled=True,
        )
