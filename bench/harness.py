"""What the demo, the benchmarks and the integration tests share: running pyinfra as a
user would, and a load run through HAProxy recorded by the gevent load generator.

Traffic goes only to 127.0.0.1, to the ports the sandbox publishes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SANDBOX_URLS = ["http://127.0.0.1:8080/", "https://127.0.0.1:8443/"]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")


@dataclass
class RunResult:
    returncode: int
    output: str

    def grand_total(self) -> dict[str, int]:
        """The pyinfra results table's last line: operations, changed, errors, unchanged."""
        match = re.search(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", self.output)
        if not match:
            raise AssertionError(f"no results table in pyinfra output:\n{self.output[-3000:]}")
        values = [0 if value == "-" else int(value) for value in match.groups()]
        return dict(zip(("operations", "changed", "errors", "unchanged"), values))


def pyinfra(*args: str, timeout: int = 900, env: dict | None = None) -> RunResult:
    """`pyinfra -y ARGS` from the repository root, output captured."""
    completed = subprocess.run(
        [PYINFRA, "-y", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return RunResult(completed.returncode, completed.stdout)


class LoadRun:
    """The gevent load generator as a subprocess, hitting only 127.0.0.1."""

    def __init__(self, urls: list[str], rate: int = 150, out_dir: Path | None = None):
        self.urls = urls
        self.rate = rate
        self.out = (out_dir or Path("/tmp")) / f"load-{os.getpid()}-{id(self)}.json"
        self.results: dict = {}

    def __enter__(self) -> "LoadRun":
        command = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--rate",
            str(self.rate),
            "--slow-every",
            "10",
            "--slow-ms",
            "800",
            "--insecure",
            "--no-records",
            "--json-out",
            str(self.out),
        ]
        for url in self.urls:
            command += ["--url", url]
        self.log = self.out.with_suffix(".log")
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True
            )
        deadline = time.monotonic() + 30
        while "loadgen: started" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the load generator did not start: {self.log.read_text()}")
            time.sleep(0.05)
        time.sleep(1.5)  # a steady load before the action starts
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1.5)  # and after it ends
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.results = json.loads(self.out.read_text())
        self.out.unlink()
        self.log.unlink()

    def summary(self) -> str:
        r = self.results
        return (
            f"sent {r['sent']} at {r['achieved_rate']:.0f}/s, failed {r['failed']} "
            f"{r['failures_by_reason']} {r['failure_examples'][:3]}, "
            f"stale keep-alive retries {r['stale_retries']}, versions {r['versions_first_seen']}"
        )

    def assert_no_failed_request(self, min_rate: float = 100) -> None:
        r = self.results
        assert r["failed"] == 0, self.summary()
        assert r["sent"] > 0 and r["achieved_rate"] >= min_rate, self.summary()

    @property
    def last_version(self) -> str:
        return self.results["versions_in_order"][-1][0]
