"""The remote syslog target's rsyslog action, with and without the kit's log host, and
the sandbox receiver's framing (octet-counted, or one message per line)."""

from __future__ import annotations

import asyncio

from deploykit.components.central_logging import remote_syslog_target
from deploykit.operations.config_file import render_template
from sandbox.syslog_receiver import read_messages

REMOTE = {
    "host": "logs.example.com",
    "port": 6514,
    "ca_file": "/etc/deploykit/remote-syslog-ca.crt",
    "name": "logs.example.com",
    "queue_max_mb": 64,
}


def forward_conf(target, remote):
    return render_template(
        "rsyslog-forward.conf.j2",
        target=target,
        port=2514,
        container_logs="/var/lib/docker/containers/*/*-json.log",
        audit_log=None,
        queue_max_mb=256,
        remote=remote,
    )


class Data(dict):
    __getattr__ = dict.get


def test_the_target_is_named_by_host_and_its_certificate_name_defaults_to_it():
    assert remote_syslog_target(Data(logging_remote_host="")) is None
    target = remote_syslog_target(
        Data(
            logging_remote_host="logs.example.com",
            logging_remote_port=6514,
            logging_remote_name="",
            logging_remote_queue_max_mb=64,
        )
    )
    assert target == REMOTE


def test_the_collector_gets_tls_with_a_verified_name_and_a_disk_queue_of_its_own():
    conf = forward_conf("10.0.0.41", REMOTE)
    assert (
        '    action(type="omfwd" target="logs.example.com" port="6514" protocol="tcp"\n'
        '           StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"\n'
        '           StreamDriverPermittedPeers="logs.example.com"\n'
        '           streamDriver.CAFile="/etc/deploykit/remote-syslog-ca.crt"\n'
        '           TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"\n'
        '           queue.type="LinkedList" queue.filename="deploykit_remote"\n'
        '           queue.maxDiskSpace="64m" queue.saveOnShutdown="on"\n'
    ) in conf
    # Beside the log host's RELP action, in the ruleset containers and syslog go through.
    assert 'action(type="omrelp" target="10.0.0.41"' in conf
    assert (
        conf.index("omrelp")
        < conf.index("omfwd")
        < conf.index('ruleset(name="deploykitFiles")')
    )


def test_instead_of_the_log_host_only_the_collector_is_forwarded_to():
    conf = forward_conf(None, REMOTE)
    assert "omrelp" not in conf
    assert 'action(type="omfwd"' in conf and "call deploykitForward" in conf


def test_without_a_remote_target_nothing_of_it_is_rendered():
    conf = forward_conf("10.0.0.41", None)
    assert "omfwd" not in conf and "gtls" not in conf


def messages(data: bytes) -> list[bytes]:
    async def read():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return [message async for message in read_messages(reader)]

    return asyncio.run(read())


def test_the_receiver_reads_octet_counted_frames_and_plain_lines():
    assert messages(b"11 <13>1 hello5 <13>x") == [b"<13>1 hello", b"<13>x"]
    assert messages(b"<13>one\n<13>two\n") == [b"<13>one", b"<13>two"]
