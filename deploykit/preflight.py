"""Checks every deploy file runs first, once per run, before any operation is planned.

pyinfra executes a deploy file once per host; the checks look at the whole inventory,
so they run for the first host only and stop the run for all of them.
"""

from __future__ import annotations

from typing import NoReturn

from pyinfra import inventory, state
from pyinfra.api.exceptions import PyinfraError

from .config import (
    ConfigError,
    Schema,
    check_group_data,
    check_groups,
    check_overrides,
    check_values,
    group_data_folders,
)

_checked_states: set[int] = set()


def preflight(required_groups: tuple[str, ...] = ()) -> None:
    """Stop with one message listing every problem, naming each culprit."""
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
    if errors:
        refuse(errors)


class DeployRefused(PyinfraError):
    """Bad input found while planning; pyinfra prints it without a traceback."""


def refuse(errors: list[str]) -> NoReturn:
    """Stop the whole run during planning: no operation has run on any host yet."""
    listing = "\n  ".join(errors)
    raise DeployRefused(f"deploykit: refusing to run, nothing was changed:\n  {listing}")
