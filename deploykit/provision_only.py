"""Which components deploys/provision.py runs: every one, or only those named by
``--data only=redis`` (several: ``only=redis,postgres``). An unknown name is refused
while planning, naming the known ones, before any host is touched."""

from __future__ import annotations

import difflib

from pyinfra import inventory

from .errors import refuse
from .preflight import once_per_run

# In the order provision runs them; each runs on its own hosts only (postgres on db, ...).
PROVISION_COMPONENTS = (
    "common",
    "hardening",
    "docker",
    "app_env",
    "accessories",
    "web_tls",
    "haproxy",
    "postgres",
    "redis",
    "central_logging",
    "scheduled_jobs",
)


def parse_only(value) -> tuple[frozenset[str], list[str]]:
    """(the components to run, problems) from the value of `only` ("" or None: all)."""
    if value in (None, ""):
        return frozenset(PROVISION_COMPONENTS), []
    if isinstance(value, (list, tuple)):
        names = [str(name).strip() for name in value]
    elif isinstance(value, str):
        names = [name.strip() for name in value.split(",")]
    else:
        return frozenset(), [f"only must be a component name or a list of them, got {value!r}"]
    problems = []
    for name in names:
        if name in PROVISION_COMPONENTS:
            continue
        close = difflib.get_close_matches(name, PROVISION_COMPONENTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(
            f"only: unknown component {name!r}{hint}; " f"known: {', '.join(PROVISION_COMPONENTS)}"
        )
    return frozenset(names), problems


def components_to_provision() -> frozenset[str]:
    """The components of this run, checked once for every host."""

    def plan() -> frozenset[str]:
        # --data sets it for every host: read it from any one.
        names, problems = parse_only(next(iter(inventory)).data.get("only"))
        if problems:
            refuse(problems)
        return names

    return once_per_run("provision_only", plan)
