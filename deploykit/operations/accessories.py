"""Accessory containers: created, recreated when their declared spec changed, removed
when no longer declared; left alone otherwise."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import StringCommand, operation

from ..commands.accessories import accessory_container_name
from ..commands.containers import start_existing, stop_and_remove
from ..facts import AccessoryContainers


@operation()
def accessory_container(accessory: str, spec: str, run_command: str, stop_timeout_s: int = 30):
    """
    Run an accessory's container as declared: recreate it when its spec hash differs.

    + accessory: the accessory's name (its container is ``accessory-NAME``)
    + spec: the hash of its declared spec, carried by the container as a label
    + run_command: the ``docker run`` line that creates it with that label
    + stop_timeout_s: seconds the old container gets to stop cleanly when replaced

    **Example:**

    .. code:: python

        accessory_container(
            name="Ensure accessory search runs as declared",
            accessory="search",
            spec="3f2a...",
            run_command=run_accessory("search", "elasticsearch:8.15.0", spec_hash="3f2a...", ...),
        )
    """
    container = accessory_container_name(accessory)
    current = host.get_fact(AccessoryContainers).get(container)
    if current is None:
        yield StringCommand(run_command)
        return
    _, current_spec, status = current
    if current_spec != spec:
        # The new container takes the same name (and ports): the old one goes first.
        yield StringCommand(stop_and_remove(container, stop_timeout_s))
        yield StringCommand(run_command)
        return
    if status != "running":
        yield StringCommand(start_existing(container))
        return
    host.noop(f"accessory {accessory} runs as declared")


@operation()
def accessory_removed(keep: list[str], stop_timeout_s: int = 30):
    """
    Remove the accessory containers of the host not in ``keep``; their volumes stay.

    + keep: container names still declared for this host
    + stop_timeout_s: seconds each gets to stop cleanly

    **Example:**

    .. code:: python

        accessory_removed(name="Ensure no undeclared accessory runs", keep=["accessory-search"])
    """
    stale = sorted(set(host.get_fact(AccessoryContainers)) - set(keep))
    if not stale:
        host.noop("no undeclared accessory container")
        return
    for container in stale:
        yield StringCommand(stop_and_remove(container, stop_timeout_s))
