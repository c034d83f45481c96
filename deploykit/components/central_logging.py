"""Central logging, as the seed did with logspout and syslog, from Debian's rsyslog.

The first host of the `logs` group receives, over TCP on its private address, the
syslog of every host and the output of every container, filed under
``logging_remote_dir/<sending host>/<program>.log``. Every host (the receiver too)
runs rsyslog as a forwarder:

- container output is read from Docker's own json-file logs, so ``docker logs`` and
  daemon.json's rotation keep working and no container needs another log driver;
- forwarding speaks RELP (rsyslog's reliable protocol: each line is acknowledged),
  through a disk-assisted queue: while the log host is down or restarting, lines wait
  on disk and are sent once it is back. Plain TCP syslog silently loses the lines
  written into a connection the receiver has already closed.
"""

from __future__ import annotations

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from ..operations.config_file import config_file, render_template

DEFAULTS = {
    # The group whose first host receives every host's logs ("" turns forwarding off).
    "logging_group": "logs",
    # RELP port the log host listens on, on its private address.
    "logging_port": 2514,
    # Where the log host files what it receives: one folder per sending host.
    "logging_remote_dir": "/var/log/deploykit/remote",
    # Days of received logs the log host keeps (rotated daily, compressed).
    "logging_retention_days": 14,
    # Largest disk queue (MB) a host keeps while the log host cannot be reached.
    "logging_queue_max_mb": 256,
}

FORWARD_CONF = "/etc/rsyslog.d/60-deploykit-forward.conf"
RECEIVE_CONF = "/etc/rsyslog.d/50-deploykit-receive.conf"
LOGROTATE_CONF = "/etc/logrotate.d/deploykit-remote"
# Docker's json-file logs, one folder per container.
CONTAINER_LOGS = "/var/lib/docker/containers/*/*-json.log"
# rsyslogd checks a drop-in as a whole configuration, which then lacks the work
# directory Debian's rsyslog.conf sets (imfile keeps its read positions there).
VALIDATE = (
    "{ echo 'global(workDirectory=\"/var/spool/rsyslog\")'; echo 'include(file=\"'{path}'\")'; }"
    " > /run/deploykit-rsyslog-check.conf"
    " && /usr/sbin/rsyslogd -N1 -f /run/deploykit-rsyslog-check.conf"
)


def log_receiver():
    """The receiving host, or None when the inventory has no such group."""
    group = host.data.logging_group
    members = inventory.get_group(group, default=None) if group else None
    return members[0] if members else None


@deploy("Central logging", data_defaults=DEFAULTS)
def central_logging(container_logs: bool) -> None:
    """Forward this host's logs (and its containers' output, if it runs containers) to
    the log host; on the log host, also receive and file everyone's."""
    receiver = log_receiver()
    if receiver is None:
        return
    data = host.data
    apt.packages(
        name="Ensure rsyslog and its RELP modules are installed",
        packages=["rsyslog", "rsyslog-relp"],
        no_recommends=True,
    )
    changed = []
    if receiver.name == host.name:
        changed.append(
            config_file(
                name="Ensure this host receives and files the fleet's logs",
                content=render_template(
                    "rsyslog-receive.conf.j2",
                    address=data.private_ip,
                    port=data.logging_port,
                    remote_dir=data.logging_remote_dir,
                ),
                dest=RECEIVE_CONF,
                validate=VALIDATE,
            )
        )
        config_file(
            name="Ensure received logs are rotated and expire",
            content=render_template(
                "logrotate-remote.j2",
                remote_dir=data.logging_remote_dir,
                days=data.logging_retention_days,
            ),
            dest=LOGROTATE_CONF,
        )
    else:
        changed.append(
            files.file(
                name="Ensure this host does not receive logs (it is not the log host)",
                path=RECEIVE_CONF,
                present=False,
            )
        )
    changed.append(
        config_file(
            name=f"Ensure logs and container output are forwarded to {receiver.name}",
            content=render_template(
                "rsyslog-forward.conf.j2",
                target=receiver.data.private_ip,
                port=data.logging_port,
                container_logs=CONTAINER_LOGS if container_logs else None,
                queue_max_mb=data.logging_queue_max_mb,
            ),
            dest=FORWARD_CONF,
            validate=VALIDATE,
        )
    )
    systemd.service(
        name="Ensure rsyslog runs with the current configuration",
        service="rsyslog.service",
        running=True,
        enabled=True,
        restarted=any(op.will_change for op in changed),
    )
