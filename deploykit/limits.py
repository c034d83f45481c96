"""A `--limit` that matches nothing is a mistake, not a successful run of nothing.

pyinfra's CLI only warns "No host matches found for --limit" and exits 0, which a CI
job reads as a deploy that worked. Inventories call `check_limit` with their groups so
the run stops instead, naming the pattern, before anything connects.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from pyinfra.api.exceptions import PyinfraError

from .command_line import arguments


class LimitMatchesNothing(PyinfraError):
    pass


def limit_patterns(argv: list[str]) -> list[str]:
    patterns = []
    for index, argument in enumerate(argv):
        if argument == "--limit" and index + 1 < len(argv):
            patterns.append(argv[index + 1])
        elif argument.startswith("--limit="):
            patterns.append(argument.split("=", 1)[1])
    return [pattern for pattern in patterns if pattern]


def check_limit(groups: dict[str, list], inventory_file: str, argv: list[str] | None = None):
    """groups: name -> [hostname or (hostname, data)], as an inventory file defines them.
    pyinfra also makes a group of the inventory file's name (`--limit staging`)."""
    hosts = {h if isinstance(h, str) else h[0] for members in groups.values() for h in members}
    names = hosts | set(groups) | {Path(inventory_file).stem}
    for pattern in limit_patterns(arguments() if argv is None else argv):
        if not any(fnmatch(name, pattern) for name in names):
            # pyinfra 3 takes each --limit as one pattern: "web1,job1" matches nothing.
            hint = "; pyinfra does not split on commas: repeat --limit" if "," in pattern else ""
            raise LimitMatchesNothing(
                f"--limit {pattern!r} matches no host or group of this inventory "
                f"(groups: {', '.join(sorted(groups))}){hint}"
            )
