"""The end-of-roll summary: host, old tag → new tag, seconds per phase, result."""

from __future__ import annotations

PHASES = ("drain", "start", "health", "readmit", "observe", "cleanup")


def summary_table(reports, phases: tuple[str, ...] = PHASES) -> str:
    header = f"{'host':<12} {'tags':<20} " + " ".join(f"{p:>8}" for p in phases)
    header += f" {'total':>7} {'overhead':>9}  result"
    lines = ["", "deploykit: roll summary (seconds)", header]
    for report in reports:
        tags = f"{report.old_tag or '-'} -> {report.new_tag}"
        seconds = " ".join(
            f"{report.phases[p]:>8.2f}" if p in report.phases else f"{'-':>8}" for p in phases
        )
        lines.append(
            f"{report.host:<12} {tags:<20} {seconds} {report.total_s:>7.2f} "
            f"{report.overhead_s:>9.2f}  {report.result}"
        )
    return "\n".join(lines)
