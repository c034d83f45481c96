"""Central logging, as the seed did with logspout and syslog, from Debian's rsyslog.

The first host of the `logs` group receives, over TCP on its private address, the
syslog of every host and the output of every container, filed under
``logging_remote_dir/<sending host>/<program>.log``, the sending host being named by
the address the lines came from (never by the hostname a sender claims). Every host
(the receiver too) runs rsyslog as a forwarder:

- container output is read from Docker's own json-file logs, so ``docker logs`` and
  daemon.json's rotation keep working and no container needs another log driver;
- on load balancers, the deploys' audit log (/var/log/deploykit/audit.log) is read
  and forwarded too;
- forwarding speaks RELP (rsyslog's reliable protocol: each line is acknowledged),
  through a disk-assisted queue: while the log host is down or restarting, lines wait
  on disk and are sent once it is back. Plain TCP syslog silently loses the lines
  written into a connection the receiver has already closed.
"""

from __future__ import annotations

import json

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from ..config import knob
from ..errors import refuse
from ..operations.config_file import config_file, render_template
from ..paths import REPO_ROOT

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
    # -- remote syslog target: an external collector (a hosted log service), beside or
    # instead of the log host ("" for logging_group). --
    # Host name or address every host forwards its logs to over TLS ("" none).
    "logging_remote_host": "",
    # Its TLS syslog port (RFC 5425).
    "logging_remote_port": 6514,
    # CA certificate (PEM, repository path) the collector's certificate must be signed by.
    "logging_remote_ca": "",
    # The name its certificate must carry ("" is logging_remote_host).
    "logging_remote_name": "",
    # Largest disk queue (MB) a host keeps while the collector cannot be reached.
    "logging_remote_queue_max_mb": 256,
}

FORWARD_CONF = "/etc/rsyslog.d/60-deploykit-forward.conf"
# The log host's table of senders: private address -> inventory name.
SENDERS_FILE = "/etc/rsyslog.d/deploykit-senders.json"
RECEIVE_CONF = "/etc/rsyslog.d/50-deploykit-receive.conf"
REMOTE_CA = "/etc/deploykit/remote-syslog-ca.crt"
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


def senders_table(hosts) -> str:
    """rsyslog's lookup table (JSON) naming each inventory host by its private address;
    an address it lacks gives "", filed by the address itself."""
    table = sorted({(h.data.get("private_ip"), h.name) for h in hosts if h.data.get("private_ip")})
    document = {
        "version": 1,
        "nomatch": "",
        "type": "string",
        "table": [{"index": address, "value": name} for address, name in table],
    }
    return json.dumps(document, indent=2) + "\n"


def audit_log_of(data) -> str | None:
    """The deploys' audit log, on load balancers (the first one keeps it)."""
    if "lb" not in host.groups:
        return None
    return knob(data, "deploy_audit_log")


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
    remote = remote_syslog_target(host.data)
    if receiver is None and remote is None:
        return
    data = host.data
    apt.packages(
        name="Ensure rsyslog and its RELP modules are installed",
        packages=["rsyslog", "rsyslog-relp"],
        no_recommends=True,
    )
    changed = []
    if remote is not None:
        changed.append(remote_syslog_ca(data))
    if receiver is not None and receiver.name == host.name:
        changed.append(
            config_file(
                name="Ensure the log host knows each sender by its address",
                content=senders_table(inventory),
                dest=SENDERS_FILE,
            )
        )
        changed.append(
            config_file(
                name="Ensure this host receives and files the fleet's logs",
                content=render_template(
                    "rsyslog-receive.conf.j2",
                    address=data.private_ip,
                    port=data.logging_port,
                    remote_dir=data.logging_remote_dir,
                    senders_file=SENDERS_FILE,
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
    destinations = [receiver.name] if receiver is not None else []
    destinations += [remote["host"]] if remote is not None else []
    changed.append(
        config_file(
            name=f"Ensure logs and container output are forwarded to {' and '.join(destinations)}",
            content=render_template(
                "rsyslog-forward.conf.j2",
                target=receiver.data.private_ip if receiver is not None else None,
                port=data.logging_port,
                container_logs=CONTAINER_LOGS if container_logs else None,
                audit_log=audit_log_of(data),
                queue_max_mb=data.logging_queue_max_mb,
                remote=remote,
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


# -- remote syslog target (an external collector over TLS) -----------------------------


def remote_syslog_target(data) -> dict | None:
    """Where the remote syslog target is and how its certificate is checked; None when
    logging_remote_host is not set."""
    if not data.logging_remote_host:
        return None
    return {
        "host": data.logging_remote_host,
        "port": int(data.logging_remote_port),
        "ca_file": REMOTE_CA,
        "name": data.logging_remote_name or data.logging_remote_host,
        "queue_max_mb": int(data.logging_remote_queue_max_mb),
    }


def remote_syslog_ca(data):
    """rsyslog's TLS driver, and the CA the collector's certificate must come from."""
    if not data.logging_remote_ca or not (REPO_ROOT / data.logging_remote_ca).is_file():
        refuse(
            [
                f"logging_remote_host is set, but logging_remote_ca ({data.logging_remote_ca!r})"
                " names no file of the repository: the collector's certificate must be checked"
            ]
        )
    apt.packages(
        name="Ensure rsyslog's TLS driver is installed (the remote syslog target)",
        packages=["rsyslog-gnutls"],
        no_recommends=True,
    )
    return config_file(
        name="Ensure the CA of the remote syslog target is installed",
        content=(REPO_ROOT / data.logging_remote_ca).read_text(),
        dest=REMOTE_CA,
    )
