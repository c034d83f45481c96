"""Roll timings on the sandbox, under load: total time, per-host phases, and the tool's
overhead (total minus the time measured on the hosts waiting on HAProxy and containers).

    python -m bench.roll_benchmark --web 3 6 [--batch 1 25%] [--data KEY=VALUE ...]
    python -m bench.roll_benchmark --web 3 --data rollout_canary_observe_s=0 \
        --variant rollout_readmit_force_up=False --variant rollout_readmit_force_up=True

For each size the sandbox is resized (SANDBOX_WEB=N), bootstrapped, provisioned and put
on v1; then v1 -> v2 is rolled under 150 requests/s and measured (for each --variant, the
next roll goes back to v1 and rolls v1 -> v2 again with those settings added). Prints a
table: `command s` is the whole pyinfra command as the shell sees it (connect, facts,
lock, plan, roll, summary); `critical` is a host's drain + start + health + readmit,
from its first traffic change to back in full service.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import REPO_ROOT, LoadRun, lb_urls, pyinfra

PHASES = ("drain", "start", "health", "readmit", "observe", "cleanup")


def resize_sandbox(web: int) -> None:
    env = {**os.environ, "SANDBOX_WEB": str(web)}
    subprocess.run(
        [sys.executable, "-m", "sandbox", "up"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # New hosts take root; hosts already hardened refuse it and are re-run as deploy.
    if pyinfra("inventories/sandbox.py", "deploys/bootstrap.py", "--user", "root").returncode:
        must(pyinfra("inventories/sandbox.py", "deploys/bootstrap.py"), "bootstrap")
    must(pyinfra("inventories/sandbox.py", "deploys/provision.py"), "provision")


def must(run, what: str):
    if run.returncode != 0:
        raise SystemExit(f"bench: {what} failed:\n{run.output[-3000:]}")
    return run


def measure(web: int, batch: str, settings: list[str]) -> dict:
    deploy = ["inventories/sandbox.py", "deploys/web.py", "--data", f"rollout_batch_size={batch}"]
    for setting in settings:
        deploy += ["--data", setting]
    must(pyinfra(*deploy, "--data", "image_tag=v1"), "deploy v1")
    report_path = Path(tempfile.mkstemp(suffix=".json")[1])
    with LoadRun(lb_urls(), rate=150) as load:
        started = time.monotonic()
        must(
            pyinfra(
                *deploy, "--data", "image_tag=v2", "--data", f"rollout_report_file={report_path}"
            ),
            "roll to v2",
        )
        command_s = time.monotonic() - started
    report = json.loads(report_path.read_text())
    report_path.unlink()
    hosts = report["hosts"]
    return {
        "web": web,
        "batch": batch,
        "settings": " ".join(settings),
        "command_s": command_s,
        "total_s": report["total_s"],
        "critical_s": statistics.mean(
            sum(h["phases"].get(p, 0) for p in ("drain", "start", "health", "readmit"))
            for h in hosts
        ),
        "phases": {p: statistics.mean(h["phases"].get(p, 0) for h in hosts) for p in PHASES},
        "overhead_mean_s": statistics.mean(h["overhead_s"] for h in hosts),
        "overhead_max_s": max(h["overhead_s"] for h in hosts),
        "requests": load.results["sent"],
        "failed": load.results["failed"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--batch", nargs="+", default=["1"])
    parser.add_argument("--data", action="append", default=[], help="KEY=VALUE, every roll")
    parser.add_argument(
        "--variant", action="append", default=[], help="KEY=VALUE[,KEY=VALUE], one roll each"
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    variants = [variant.split(",") for variant in args.variant] or [[]]
    rows = []
    for web in args.web:
        resize_sandbox(web)
        for batch in args.batch:
            for variant in variants:
                rows.append(measure(web, batch, args.data + variant))
                print_row(rows[-1], header=len(rows) == 1)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(row["failed"] == 0 for row in rows) else 1


def print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'web':>4} {'batch':>6} {'command s':>9} {'total s':>8} {'critical':>8} "
            + " ".join(f"{p:>8}" for p in PHASES)
            + f" {'overhead':>9} {'max':>6} {'requests':>9} {'failed':>7}  settings"
        )
    print(
        f"{row['web']:>4} {row['batch']:>6} {row['command_s']:>9.2f} {row['total_s']:>8.2f} "
        f"{row['critical_s']:>8.2f} "
        + " ".join(f"{row['phases'][p]:>8.2f}" for p in PHASES)
        + f" {row['overhead_mean_s']:>9.2f} {row['overhead_max_s']:>6.2f}"
        f" {row['requests']:>9} {row['failed']:>7}  {row['settings']}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
