"""Staging: an example fleet on documentation addresses (RFC 5737). Replace with yours.

Each host is reached on its public address and talks to the others on ``private_ip``.
"""

from deploykit.limits import check_limit

lb = [("lb1.staging.example.com", {"ssh_hostname": "192.0.2.10", "private_ip": "10.0.0.10"})]

web = [
    ("web1.staging.example.com", {"ssh_hostname": "192.0.2.21", "private_ip": "10.0.0.21"}),
    ("web2.staging.example.com", {"ssh_hostname": "192.0.2.22", "private_ip": "10.0.0.22"}),
]

job = [("job1.staging.example.com", {"ssh_hostname": "192.0.2.31", "private_ip": "10.0.0.31"})]

db = [("db1.staging.example.com", {"ssh_hostname": "192.0.2.41", "private_ip": "10.0.0.41"})]

logs = [("logs1.staging.example.com", {"ssh_hostname": "192.0.2.51", "private_ip": "10.0.0.51"})]

check_limit({"lb": lb, "web": web, "job": job, "db": db, "logs": logs}, __file__)
