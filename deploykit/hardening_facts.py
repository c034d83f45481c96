"""Facts the hardening component reads while planning. They only read; never change."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from .ssh_policy import QUERIES, parse_offers


class OpenSshOffers(FactBase):
    """{`ssh -Q` query: {algorithms}} of the host's own OpenSSH build (sshd is the same
    package version, so it offers the same)."""

    def command(self) -> str:
        queries = " ".join(sorted(set(QUERIES.values())))
        return (
            f'for query in {queries}; do echo "[$query]"; ssh -Q "$query"; done; '
            "echo '[version]'; ssh -V 2>&1 | sed -n 's/^OpenSSH_\\([0-9]*\\.[0-9]*\\).*/\\1/p'"
        )

    def process(self, output):
        return parse_offers(list(output))


class SshConnection(FactBase):
    """(client address, sshd port) of this run's own SSH connection, as the host sees
    it; None when not over SSH. Read without sudo: sudo drops SSH_CONNECTION."""

    def command(self) -> str:
        return 'printf "%s\\n" "$SSH_CONNECTION"'

    def process(self, output):
        words = "".join(output).split()
        if len(words) != 4 or not words[3].isdigit():
            return None
        return words[0], int(words[3])


class SysctlValues(FactBase):
    """{key: (value, "writable" | "read-only")} for the keys asked, as this host's
    /proc/sys shows them; keys it lacks are left out. Inside a container, kernel-wide
    keys are read-only (the kernel is the machine's) while network keys belong to the
    host's own network namespace."""

    def command(self, keys: list[str]) -> str:
        quoted = " ".join(shlex.quote(key) for key in keys)
        return (
            f"for key in {quoted}; do "
            'path=/proc/sys/$(printf "%s" "$key" | tr . /); '
            '[ -e "$path" ] || continue; '
            'if [ -w "$path" ]; then access=writable; else access=read-only; fi; '
            'printf "%s\\t%s\\t%s\\n" "$key" "$access" "$(tr -s "\\t " " " < "$path")"; '
            "done"
        )

    def process(self, output):
        values = {}
        for line in output:
            key, access, value = (line.split("\t", 2) + ["", ""])[:3]
            values[key] = (value.strip(), access)
        return values


class AptSecuritySuite(FactBase):
    """Whether apt's sources name a security suite (bookworm-security, trixie-security,
    noble-security...), in one-line or deb822 files."""

    def command(self) -> str:
        return (
            "grep -rhs -v '^[[:space:]]*#' /etc/apt/sources.list /etc/apt/sources.list.d/ "
            "| grep -c -- '-security' || true"
        )

    def process(self, output):
        text = "".join(output).strip()
        return text.isdigit() and int(text) > 0


class KernelAudit(FactBase):
    """Whether this host may load audit rules into its kernel: `auditctl -s` answers
    (False where it is refused: a container, whose kernel is the machine's). None
    while auditctl is not installed yet."""

    def command(self) -> str:
        return (
            "if ! command -v auditctl >/dev/null; then echo absent; "
            "elif auditctl -s >/dev/null 2>&1; then echo yes; else echo no; fi"
        )

    def process(self, output):
        answer = "".join(output).strip()
        return {"yes": True, "no": False}.get(answer)


class UnitStates(FactBase):
    """{unit: (UnitFileState, ActiveState)} of the given systemd units this host has
    (units it lacks are left out: Debian 12's auditd has no audit-rules.service)."""

    def command(self, units: tuple[str, ...]) -> str:
        names = " ".join(shlex.quote(unit) for unit in units)
        return (
            "systemctl show --property Id,LoadState,UnitFileState,ActiveState "
            f"{names} 2>/dev/null || true"
        )

    def process(self, output):
        states, current = {}, {}
        for line in [*output, ""]:
            if "=" in line:
                key, value = line.strip().split("=", 1)
                current[key] = value
                continue
            if current.get("LoadState") == "loaded":
                states[current["Id"]] = (
                    current.get("UnitFileState", ""),
                    current.get("ActiveState", ""),
                )
            current = {}
        return states
