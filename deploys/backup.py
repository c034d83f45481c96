"""Back up the app's database now on every db host: the nightly timer's job, at once.
Returns when the dump is written (a oneshot service); the journal says which file.

pyinfra -y inventories/staging.py deploys/backup.py
pyinfra inventories/staging.py --limit db exec -- journalctl -u deploykit-pg-backup -n 3
"""

from pyinfra import host
from pyinfra.operations import systemd

from deploykit.components.postgres import BACKUP_UNIT
from deploykit.preflight import preflight

preflight(required_groups=("db",))

if "db" in host.groups:
    systemd.service(
        name="Back up the app's database now",
        service=f"{BACKUP_UNIT}.service",
        restarted=True,
    )
