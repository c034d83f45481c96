"""Logs to an external collector (logging_remote_*): rsyslog on web1 forwards over TLS to
the sandbox's syslog receiver, a small container standing in for a hosted service, whose
certificate the fleet's CA signed. A marker line from a web container arrives; lines
sent while the receiver is down arrive after it returns; a receiver presenting a
certificate from another CA gets nothing (and the lines arrive once it is the right one
again)."""

from __future__ import annotations

import uuid

import pytest

from sandbox.cluster import (
    FLEET_CA_FILES,
    SYSLOG_RECEIVED,
    SYSLOG_RECEIVER_ALIAS,
    SYSLOG_RECEIVER_PORT,
    Sandbox,
)
from sandbox.tls import issue_certificate, new_ca

from .sandbox_world import pyinfra, wait_for

REMOTE = [
    "--data",
    f"logging_remote_host={SYSLOG_RECEIVER_ALIAS}",
    "--data",
    f"logging_remote_port={SYSLOG_RECEIVER_PORT}",
]


def provision_web1(*extra: str):
    run = pyinfra(
        "inventories/sandbox.py",
        "deploys/provision.py",
        "--limit",
        "web1",
        "--data",
        "only=central_logging",
        *extra,
    )
    assert run.returncode == 0, run.failure_excerpt()
    return run


def fleet_signed() -> tuple[bytes, bytes]:
    """A certificate for the receiver, signed by the fleet's CA (logging_remote_ca in
    group_data/sandbox.py)."""
    ca_certificate, ca_key = (path.read_bytes() for path in FLEET_CA_FILES)
    return issue_certificate(SYSLOG_RECEIVER_ALIAS, [SYSLOG_RECEIVER_ALIAS], ca_certificate, ca_key)


class Receiver:
    def __init__(self):
        self.sandbox = Sandbox()
        self.container = self.sandbox.syslog_receiver(*fleet_signed())

    def received(self) -> str:
        result = self.container.exec_run(["sh", "-c", f"cat {SYSLOG_RECEIVED} 2>/dev/null"])
        return result.output.decode(errors="replace")

    def has(self, marker: str) -> bool:
        self.container.reload()
        return self.container.status == "running" and marker in self.received()


@pytest.fixture(scope="module")
def receiver(on_v1):
    receiver = Receiver()
    provision_web1(*REMOTE)
    yield receiver
    # web1 back to the log host alone, and no receiver left.
    provision_web1()
    receiver.sandbox.remove_syslog_receiver()


def rsyslog_errors_since(fleet, start_line: int) -> str:
    _, output = fleet.sh("web1", f"tail -n +{start_line + 1} /var/log/syslog | grep rsyslogd")
    return output


def syslog_lines(fleet) -> int:
    return int(fleet.sh("web1", "wc -l < /var/log/syslog")[1].strip())


def test_a_line_from_a_web_container_reaches_the_collector(receiver, fleet):
    marker = f"remote-{uuid.uuid4().hex[:12]}"
    code, output = fleet.sh("web1", f"curl -fsS -o /dev/null 'http://127.0.0.1/?marker={marker}'")
    assert code == 0, output
    wait_for(lambda: receiver.has(marker), timeout=60, interval=0.5, what="the marker line")
    line = next(line for line in receiver.received().splitlines() if marker in line)
    assert f"GET /?marker={marker}" in line


def test_lines_sent_while_the_collector_is_down_arrive_after_it_returns(receiver, fleet):
    marker = f"queued-{uuid.uuid4().hex[:12]}"
    receiver.container.stop(timeout=5)
    try:
        assert not receiver.has(marker)
        for number in range(3):
            assert fleet.sh("web1", f"logger -t deploykit-probe {marker}-{number}")[0] == 0
    finally:
        receiver.container.start()
    for number in range(3):
        wait_for(
            lambda: receiver.has(f"{marker}-{number}"),
            timeout=90,
            interval=0.5,
            what=f"queued line {number}",
        )


def test_a_collector_with_another_cas_certificate_gets_nothing(receiver, fleet):
    stranger_ca, stranger_key = new_ca("not the fleet's CA")
    marker = f"refused-{uuid.uuid4().hex[:12]}"
    start = syslog_lines(fleet)
    receiver.container = receiver.sandbox.syslog_receiver(
        *issue_certificate(
            SYSLOG_RECEIVER_ALIAS, [SYSLOG_RECEIVER_ALIAS], stranger_ca, stranger_key
        )
    )
    try:
        assert fleet.sh("web1", f"logger -t deploykit-probe {marker}")[0] == 0
        # rsyslog tried, and refused the certificate.
        wait_for(
            lambda: "certificate" in rsyslog_errors_since(fleet, start).lower(),
            timeout=60,
            interval=0.5,
            what="rsyslog refusing the collector's certificate",
        )
        assert receiver.received() == ""
    finally:
        receiver.container = receiver.sandbox.syslog_receiver(*fleet_signed())
    # Queued, not lost: it arrives at the right collector.
    wait_for(lambda: receiver.has(marker), timeout=90, interval=0.5, what="the queued line")
