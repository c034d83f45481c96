"""Operations of the hardening component."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from ..hardening_facts import SysctlValues


def sysctl_text(value: object) -> str:
    """A value as /proc/sys prints it: words separated by single spaces."""
    return " ".join(str(value).split())


def sysctl_plan(wanted: dict[str, object], current: dict[str, tuple[str, str]]):
    """(keys to set, keys this host cannot set with why), from the SysctlValues fact."""
    to_set, unsettable = {}, {}
    for key, value in sorted(wanted.items()):
        text = sysctl_text(value)
        if key not in current:
            unsettable[key] = "absent here"
            continue
        now, access = current[key]
        if now == text:
            continue
        if access == "writable":
            to_set[key] = text
        else:
            unsettable[key] = f"read-only here, is {now}"
    return to_set, unsettable


@operation()
def sysctl_values(values: dict[str, object]):
    """
    Set kernel parameters now, each checked after it is written; the ones this host
    cannot set are left alone (``unsettable_sysctls`` names them, for the report).

    + values: {key: value}, the same as the file that sets them at every boot

    Inside a container (the sandbox), kernel-wide keys such as kernel.kptr_restrict
    are read-only: the kernel is the machine's. Only the host's own network
    namespace's keys (net.*) can be set there. A VM sets them all.

    **Example:**

    .. code:: python

        sysctl_values(
            name="Ensure the kernel runs with the hardened settings",
            values={"kernel.kptr_restrict": 2},
        )
    """
    current = host.get_fact(SysctlValues, keys=sorted(values))
    to_set, _ = sysctl_plan(values, current)
    if not to_set:
        host.noop("the kernel parameters this host can set are current")
        return
    for key, text in to_set.items():
        yield StringCommand(
            "sysctl",
            "-q",
            "-w",
            QuoteString(f"{key}={text}"),
            "&&",
            "test",
            f'"$(sysctl -n {shlex.quote(key)} | tr -s "\\t " " ")"',
            "=",
            QuoteString(text),
        )


def unsettable_sysctls(values: dict[str, object]) -> dict[str, str]:
    """{key: why} of the wanted values this host cannot set (while planning)."""
    current = host.get_fact(SysctlValues, keys=sorted(values))
    return sysctl_plan(values, current)[1]
