"""Staging: an example fleet on documentation addresses (RFC 5737). Replace with yours.

Each host is reached on its public address and talks to the others on ``private_ip``.

Host keys are pinned: every connection, the first one as root included, checks the
host's key against ``staging.known_hosts`` beside this file, kept in the repository. Fill
it before the first bootstrap, and again for a host whose key changed on purpose:

    bin/pin-host-keys inventories/staging.py [--replace HOST]

then compare each fingerprint it prints with the host's own, out of band (the provider's
console or boot log: ``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub``), and commit the
file. A host whose key differs from the pinned one stops the run before anything is sent.
"""

from pathlib import Path

from deploykit.host_keys import guard_host_keys
from deploykit.limits import check_limit

_PINNED = {
    "ssh_known_hosts_file": str(Path(__file__).resolve().with_name("staging.known_hosts")),
    "ssh_strict_host_key_checking": "yes",
}


def _host(name, public, private):
    return (name, {"ssh_hostname": public, "private_ip": private, **_PINNED})


lb = [_host("lb1.staging.example.com", "192.0.2.10", "10.0.0.10")]

web = [
    _host("web1.staging.example.com", "192.0.2.21", "10.0.0.21"),
    _host("web2.staging.example.com", "192.0.2.22", "10.0.0.22"),
]

job = [_host("job1.staging.example.com", "192.0.2.31", "10.0.0.31")]

db = [_host("db1.staging.example.com", "192.0.2.41", "10.0.0.41")]

logs = [_host("logs1.staging.example.com", "192.0.2.51", "10.0.0.51")]

check_limit({"lb": lb, "web": web, "job": job, "db": db, "logs": logs}, __file__)
guard_host_keys(__file__)
