"""The local sandbox (``make sandbox``): the same groups as a real fleet.

Hosts answer SSH on ports published on 127.0.0.1; ``private_ip`` is each host's
address on the sandbox network, the one other hosts and the firewall see. Their host keys
are pinned in .sandbox/known_hosts, which the sandbox reads out of band (docker exec).
"""

import json
from pathlib import Path

from deploykit.host_keys import guard_host_keys
from deploykit.limits import check_limit

_CLUSTER_FILE = Path(__file__).resolve().parent.parent / ".sandbox" / "cluster.json"

if not _CLUSTER_FILE.exists():
    raise SystemExit(
        f"inventories/sandbox.py: {_CLUSTER_FILE} is missing; run `make sandbox` first"
    )

_cluster = json.loads(_CLUSTER_FILE.read_text())


def _hosts(group):
    return [
        (
            host["name"],
            {
                "ssh_hostname": "127.0.0.1",
                "ssh_port": host["ssh_port"],
                "ssh_key": _cluster["ssh_key"],
                "ssh_known_hosts_file": _cluster["known_hosts"],
                "ssh_strict_host_key_checking": "yes",
                "private_ip": host["private_ip"],
            },
        )
        for host in _cluster["hosts"]
        if host["group"] == group
    ]


lb = _hosts("lb")
web = _hosts("web")
job = _hosts("job")
db = _hosts("db")
# The database host doubles as the log host (a real fleet may give it its own VM).
logs = list(db)

check_limit({"lb": lb, "web": web, "job": job, "db": db, "logs": logs}, __file__)
guard_host_keys(__file__)
