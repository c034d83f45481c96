"""The README's main command (`make demo`): on the provisioned sandbox, deploy v1, then
roll to v2 under continuous load through HAProxy, and print what the load saw.

Run by `make demo` after `make sandbox bootstrap provision images`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .harness import LoadRun, lb_urls, pyinfra


def deploy(tag: str, report: Path | None = None):
    args = ["inventories/sandbox.py", "deploys/web.py", "--data", f"image_tag={tag}"]
    if report:
        args += ["--data", f"rollout_report_file={report}"]
    return pyinfra(*args)


def main() -> int:
    print("demo: deploying v1 to every web host")
    first = deploy("v1")
    if first.returncode != 0:
        print(first.output[-4000:])
        return 1
    report_path = Path(tempfile.mkstemp(prefix="deploykit-roll-", suffix=".json")[1])
    print("demo: rolling v1 -> v2 under 150 requests/s (HTTP and HTTPS, keep-alive and new")
    print("      connections, every 10th request a slow 800 ms one)")
    with LoadRun(lb_urls(), rate=150) as load:
        roll = deploy("v2", report_path)
    if roll.returncode != 0:
        print(roll.output[-4000:])
        return 1
    report = json.loads(report_path.read_text())
    report_path.unlink()
    print_results(load.results, report)
    return 0 if load.results["failed"] == 0 else 1


def print_results(load: dict, report: dict) -> None:
    fast = load["latency_ms"]["fast"]
    slow = load["latency_ms"]["slow"]
    runs = load["versions_in_order"]
    print()
    print(f"requests sent     {load['sent']}  ({load['achieved_rate']:.0f}/s)")
    print(f"failed requests   {load['failed']}  {load['failures_by_reason'] or ''}")
    print(f"stale keep-alive  {load['stale_retries']} (idle connections the server had closed,")
    print("                  retried once as HTTP clients do; not failures)")
    print(
        f"versions seen     {' -> '.join(load['versions_first_seen'])} "
        f"(counts {load['version_counts']}; {len(runs)} runs while both served)"
    )
    print(
        f"latency ms        p50 {fast['p50']:.1f}  p99 {fast['p99']:.1f}  "
        f"(slow requests p50 {slow['p50']:.0f}  p99 {slow['p99']:.0f})"
    )
    print()
    print(f"roll of {len(report['hosts'])} hosts in {report['total_s']:.1f} s, per host:")
    phases = ("drain", "start", "health", "readmit", "observe", "cleanup")
    print(f"  {'host':<8}" + "".join(f"{p:>9}" for p in phases) + f"{'total':>9}{'overhead':>10}")
    for host in report["hosts"]:
        cells = "".join(f"{host['phases'].get(p, 0):>9.2f}" for p in phases)
        print(f"  {host['host']:<8}{cells}{host['total_s']:>9.2f}{host['overhead_s']:>10.2f}")


if __name__ == "__main__":
    sys.exit(main())
