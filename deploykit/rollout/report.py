"""A roll's reports: the end-of-roll summary table (host, old tag → new tag, seconds
per phase, result), and the JSON file of rollout_report_file (bench/ reads it)."""

from __future__ import annotations

import json
from pathlib import Path


def summary_table(reports, phases: tuple[str, ...]) -> str:
    header = f"{'host':<12} {'versions':<34} " + " ".join(f"{p:>8}" for p in phases)
    header += f" {'total':>7} {'overhead':>9}  result"
    lines = ["", "deploykit: roll summary (seconds)", header]
    for report in reports:
        old = report.old_version.short if report.old_version else "-"
        tags = f"{old} -> {report.new_version.short}"
        seconds = " ".join(
            f"{report.phases[p]:>8.2f}" if p in report.phases else f"{'-':>8}" for p in phases
        )
        lines.append(
            f"{report.host:<12} {tags:<34} {seconds} {report.total_s:>7.2f} "
            f"{report.overhead_s:>9.2f}  {report.result}"
        )
    return "\n".join(lines)


def write_report(request, reports, seconds: float, failure: str | None) -> None:
    """The roll as JSON, when the request names a file for it."""
    path = request.report_file
    if not path:
        return
    document = {
        "image": request.settings.image,
        "web_hosts": request.hosts,
        "lb_hosts": request.lb_hosts,
        "batch_size": request.settings.batch_size,
        "total_s": round(seconds, 3),
        "failure": failure,
        "hosts": [
            {
                "host": r.host,
                "old_version": str(r.old_version) if r.old_version else None,
                "new_version": str(r.new_version),
                "result": r.result,
                "stranded": r.stranded,
                "phases": {k: round(v, 3) for k, v in r.phases.items()},
                "total_s": round(r.total_s, 3),
                "waited_s": round(r.waited_s, 3),
                "overhead_s": round(r.overhead_s, 3),
            }
            for r in reports
        ],
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")
