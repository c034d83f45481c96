"""Requests failed while HAProxy reloads on a busy machine: reloads alone, CPU load
alone, and both, on the sandbox as it is (no roll).

    python -m bench.reload_stall [--seconds 30] [--pause 1] [--burners 2]

Runs three measurements of SECONDS each under 150 requests/s through lb1: a reload of
lb1's HAProxy every PAUSE seconds; BURNERS busy loops on this machine and no reload;
both together. Prints, for each, the requests sent and failed, by reason. On Debian 12
hosts (HAProxy 2.6) the third fails requests where the first two fail none; see
tests/integration/test_reload_storm.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from .harness import CLUSTER_FILE, LoadRun, lb_urls

BUSY_LOOP = (
    "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass"
)


def reload_haproxy() -> None:
    cluster = json.loads(CLUSTER_FILE.read_text())
    container = f"{cluster['container_prefix']}lb1"
    subprocess.run(
        ["docker", "exec", container, "systemctl", "reload", "haproxy"],
        check=True,
        capture_output=True,
    )


def measure(seconds: float, pause: float, burners: int, reloads: bool) -> dict:
    busy = []
    count = 0
    with LoadRun(lb_urls()) as load:
        time.sleep(2)
        busy = [
            subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)])
            for _ in range(burners)
        ]
        end = time.time() + seconds
        while time.time() < end:
            if reloads:
                reload_haproxy()
                count += 1
            time.sleep(pause)
        for process in busy:
            process.wait()
    results = load.results
    return {
        "sent": results["sent"],
        "failed": results["failed"],
        "by_reason": results["failures_by_reason"],
        "reloads": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--pause", type=float, default=1)
    parser.add_argument("--burners", type=int, default=2)
    args = parser.parse_args()
    cases = [
        ("reloads alone", 0, True),
        (f"{args.burners} busy loops alone", args.burners, False),
        (f"reloads and {args.burners} busy loops", args.burners, True),
    ]
    print(f"{'case':<32} {'reloads':>7} {'sent':>6} {'failed':>6}  by reason")
    for name, burners, reloads in cases:
        row = measure(args.seconds, args.pause, burners, reloads)
        print(
            f"{name:<32} {row['reloads']:>7} {row['sent']:>6} {row['failed']:>6}  "
            f"{row['by_reason']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
