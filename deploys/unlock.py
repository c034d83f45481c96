"""Release a stale deploy lock, explicitly: when a deploy died without giving it back
(killed, or its machine lost), and you have checked that it is not running.

    pyinfra -y inventories/sandbox.py deploys/unlock.py

Prints who held the lock and writes the release to the audit log. `--dry` only shows
the holder.
"""

from pyinfra import host, logger
from pyinfra.operations import python

from deploykit.preflight import preflight
from deploykit.rollout.lock import current_holder, lock_host
from deploykit.rollout.run import release_lock_by_hand

preflight(required_groups=("lb",))

if host.name == lock_host().name:
    holder = current_holder()
    logger.info(f"deploykit: deploy lock: {holder or 'not held'}")
    python.call(
        name="Release the deploy lock, saying who held it",
        function=release_lock_by_hand,
    )
