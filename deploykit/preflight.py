"""Checks every deploy file runs first, once per run, before any operation is planned.

pyinfra executes a deploy file once per host; the checks look at the whole inventory,
so they run for the first host only and stop the run for all of them.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from gevent.lock import RLock
from pyinfra import inventory, state

from .appenv import host_app_env
from .config import (
    ConfigError,
    Schema,
    check_group_data,
    check_groups,
    check_overrides,
    check_values,
    group_data_folders,
)
from .errors import refuse

_checked_states: set[int] = set()

T = TypeVar("T")
# pyinfra loads the deploy file for every host at once, in greenlets: without the lock,
# each would run the fleet-wide planning (facts from the LBs and the registry, the deploy
# lock), and an LB's SSH connection would get more simultaneous sessions than sshd
# allows (MaxSessions 10). Reentrant: one plan may ask for another.
_planning = RLock()
_planned: dict[tuple[int, str], object] = {}


def once_per_run(name: str, plan: Callable[[], T]) -> T:
    """`plan()`, computed by the first host's greenlet and shared by the others. A plan
    that refuses is not kept: every host's load stops on it."""
    with _planning:
        key = (id(state), name)
        if key not in _planned:
            _planned[key] = plan()
        return _planned[key]  # type: ignore[return-value]


def preflight(required_groups: tuple[str, ...] = (), app_env_groups: tuple[str, ...] = ()) -> None:
    """Stop with one message listing every problem, naming each culprit.

    + required_groups: inventory groups this deploy needs hosts in
    + app_env_groups: groups whose hosts get the app's env file or start its containers:
      the final environment of each of their hosts (in --limit) is composed and checked
    """
    if id(state) in _checked_states:
        return
    _checked_states.add(id(state))
    schema = Schema.build()
    try:
        errors = [e for folder in group_data_folders() for e in check_group_data(schema, folder)]
    except ConfigError as error:
        errors = [str(error)]
    errors += check_overrides(schema, inventory.override_data)
    errors += check_groups(inventory, required_groups)
    errors += check_values(schema, inventory)
    if not errors:  # composing needs well-typed settings
        errors += check_app_env(inventory, app_env_groups, state.is_host_in_limit)
    if errors:
        refuse(errors)


def check_app_env(inventory, groups: tuple[str, ...], in_limit) -> list[str]:
    """Each problem of the composed environments once, with the hosts it concerns
    (``hosts web1, web2: GUNICORN_WORKERS (app_env) must be an int, got 'abc'``)."""
    hosts_by_problem: dict[str, list[str]] = {}
    for host in inventory:
        if not set(groups) & set(host.groups) or not in_limit(host):
            continue
        for problem in host_app_env(host, inventory).problems:
            hosts_by_problem.setdefault(problem, []).append(host.name)
    return [
        f"host{'s' if len(names) > 1 else ''} {', '.join(names)}: {problem}"
        for problem, names in hosts_by_problem.items()
    ]


def hosts_in_run(group: str) -> list:
    """The hosts of `group` this run acts on (inside --limit), in inventory order."""
    return [h for h in inventory.get_group(group, default=[]) or [] if state.is_host_in_limit(h)]
