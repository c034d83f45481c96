"""What pyinfra's command line said that its State does not keep: the inventory file,
--dry, and the --limit patterns. The one place the package reads ``sys.argv``."""

from __future__ import annotations

import sys
from pathlib import Path


def arguments() -> list[str]:
    """pyinfra's arguments, without the program name."""
    return sys.argv[1:]


def inventory_file() -> str | None:
    """The inventory named on the command line: its first existing .py argument."""
    for argument in arguments():
        if argument.endswith(".py") and Path(argument).is_file():
            return argument
    return None


def is_dry_run() -> bool:
    # pyinfra keeps --dry in its CLI only; the State never learns of it.
    return "--dry" in arguments()
