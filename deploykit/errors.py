"""The refusal every check raises: a leaf module, so that any module may refuse without
importing the checks themselves (as pyinfra keeps its errors in api/exceptions.py)."""

from __future__ import annotations

from typing import NoReturn

from pyinfra.api.exceptions import PyinfraError


class DeployRefused(PyinfraError):
    """Bad input found while planning; pyinfra prints it without a traceback."""


def refuse(errors: list[str]) -> NoReturn:
    """Stop the whole run during planning: no operation has run on any host yet."""
    listing = "\n  ".join(errors)
    raise DeployRefused(f"deploykit: refusing to run, nothing was changed:\n  {listing}")
