"""The fleet at a glance (deploys/status.py): what each app host runs, how HAProxy
sees it, who holds the deploy lock, and the last deploys. Pure rendering."""

from __future__ import annotations

import json

from .commands.images import Version


def health_of(status: str) -> str:
    """Docker's status text -> healthy / unhealthy / starting / running / exited."""
    for word in ("unhealthy", "healthy", "health: starting"):
        if f"({word})" in status:
            return word.replace("health: ", "")
    return "running" if status.startswith("Up") else status.split(" ")[0].lower() or "-"


def shown_version(container: dict) -> str:
    """The container's tag and short digest (`v2@3f1c0a9e2b7d`), the tag alone when it
    was not pinned."""
    if not container.get("tag"):
        return "-"
    return Version(container["tag"], container.get("digest") or "").short


def host_rows(host: str, containers: list[dict], lb_servers: dict[str, dict | None]) -> list[str]:
    """One line per running container of `host`, with its server on each LB."""
    on_lbs = []
    for lb, servers in sorted(lb_servers.items()):
        if servers is None:
            on_lbs.append(f"{lb}: no answer")
        elif host in servers:
            status, sessions = servers[host]
            on_lbs.append(f"{lb}: {status} {sessions} sess")
    running = [c for c in containers or [] if c["status"].startswith("Up")]
    if not running:
        return [f"  {host:<10} {'-':<8} {'(no app container)':<20} {'; '.join(on_lbs)}".rstrip()]
    return [
        f"  {host:<10} {c['role']:<8} {shown_version(c):<26} {health_of(c['status']):<9} "
        f"{'; '.join(on_lbs) if c['role'] == 'app' else ''}".rstrip()
        for c in sorted(running, key=lambda c: c["role"])
    ]


def audit_rows(lines: list[str]) -> list[str]:
    rows = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            rows.append(f"  {line}")
            continue
        what = " ".join(str(entry.get(k, "")) for k in ("action", "tag")).strip()
        if entry.get("event") == "unlocked":
            what = f"unlock (was: {entry.get('released', '?')})"
        result = entry.get("result") or entry.get("event", "")
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        rows.append(
            f"  {entry.get('at', '?')}  {entry.get('who', '?'):<20} {what:<16} {result}{reason}"
        )
    return rows


def job_result(job: dict[str, str]) -> str:
    """How a scheduled job's last run ended, a failure in capitals."""
    result, status = job.get("result"), job.get("exit_status", "-")
    if result is None:
        ended = "never run"
    elif result == "success":
        ended = "succeeded"
    elif result == "timeout":
        ended = "FAILED: stopped at its time limit"
    elif result == "exit-code" and status == "137":
        ended = "FAILED: killed (SIGKILL)"
    elif result == "exit-code":
        ended = f"FAILED: exit status {status}"
    elif result == "signal":
        ended = f"FAILED: killed by SIG{status}"
    else:
        ended = f"FAILED: {result}"
    if job.get("active") in ("activating", "deactivating"):
        ended += " (running now)"
    return ended


def job_rows(host: str, jobs: list[dict[str, str]]) -> list[str]:
    """One line per scheduled job installed on `host`: schedule, last run (its start and
    tag), result, next run. A failed last run is marked with `!!`."""
    rows = []
    for job in jobs:
        ended = job_result(job)
        mark = "!!" if ended.startswith("FAILED") else "  "
        last = f"{job.get('started', '-')} {job.get('tag', '')}".strip() if "result" in job else "-"
        # systemd's "Thu 2026-11-27 00:21:50 UTC", without the weekday; "" or n/a: none.
        next_run = job.get("next", "")
        next_run = next_run.split(" ", 1)[1] if next_run[:3].isalpha() and " " in next_run else "-"
        rows.append(
            f"{mark}{job['job']:<16} {host:<10} {job.get('schedule', '-'):<18} {last:<25} "
            f"{ended:<36} {next_run}".rstrip()
        )
    return rows


def render_scheduled_jobs(rows: list[str]) -> list[str]:
    lines = [
        "scheduled jobs:",
        f"  {'job':<16} {'host':<10} {'schedule':<18} {'last run':<25} {'result':<36} next run",
    ]
    lines += rows or ["  (none)"]
    failed = [row[2:].split()[:2] for row in rows if row.startswith("!!")]
    if failed:
        names = ", ".join(f"{job} ({host})" for job, host in failed)
        lines.append(f"!! scheduled jobs whose last run FAILED: {names}")
    return lines


def render_status(
    rows: list[str],
    lock_holder: str,
    audit_lines: list[str],
    lock_host: str,
    scheduled_job_rows: list[str] | None = None,
) -> str:
    lines = [
        "",
        "deploykit: status",
        f"  {'host':<10} {'role':<8} {'tag':<10} {'health':<9} load balancers",
    ]
    lines += rows
    if scheduled_job_rows is not None:
        lines += render_scheduled_jobs(scheduled_job_rows)
    lines.append(f"deploy lock on {lock_host}: {lock_holder or 'free'}")
    lines.append(f"last deploys (audit log on {lock_host}):")
    lines += audit_rows(audit_lines) or ["  (none yet)"]
    return "\n".join(lines)
