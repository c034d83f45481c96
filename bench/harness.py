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
CLUSTER_FILE = REPO_ROOT / ".sandbox" / "cluster.json"
PYINFRA = str(Path(sys.executable).parent / "pyinfra")


def lb_urls(lb: str = "lb1") -> list[str]:
    """The HTTP and HTTPS front doors the sandbox publishes on 127.0.0.1 for `lb`."""
    cluster = json.loads(CLUSTER_FILE.read_text())
    published = next(h["published"] for h in cluster["hosts"] if h["name"] == lb)
    return [f"http://127.0.0.1:{published['80']}/", f"https://127.0.0.1:{published['443']}/"]


def registry_from_here() -> str:
    """The sandbox registry as this machine reaches it (for `make images`)."""
    return json.loads(CLUSTER_FILE.read_text())["registry"]["from_here"]


# pyinfra's own error lines ("Error: ...", "[host] Error", "--> An error occurred"),
# tracebacks and the kit's refusals.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
ERROR_LINE = re.compile(r"\berror\b|Traceback|refus|[Ff]ailed", re.IGNORECASE)


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

    def changed_operations(self) -> list[str]:
        """Each "[host] operation" that changed something, from the run's log (pyinfra
        prints "--> Starting operation: NAME", then "[host] Success" where it ran
        commands and "[host] No changes" where not). An idempotence check prints these
        when it fails: the results table counts changes but, cut to fit an assertion
        message, rarely shows which row it was."""
        changed = []
        operation = "?"
        for line in ANSI_ESCAPE.sub("", self.output).splitlines():
            started = re.search(r"--> Starting (?:[\w ,]+ )?operation: (.*)$", line)
            if started:
                operation = started.group(1).strip()
                continue
            succeeded = re.match(r"\s*\[([^\]]+)\]\s+Success", line)
            if succeeded:
                changed.append(f"[{succeeded.group(1)}] {operation}")
        return changed

    def failure_excerpt(self, limit: int = 6000) -> str:
        """What a failed run said about its failure: every error line with the lines
        around it, then the output's end. The end alone is pyinfra's results table,
        which counts errors but never says what they were."""
        lines = self.output.splitlines()
        marked = [
            index
            for index, line in enumerate(lines)
            if ERROR_LINE.search(line) and "Grand total" not in line
        ]
        kept: list[int] = sorted(
            {near for index in marked for near in range(max(0, index - 3), index + 4)}
        )
        excerpt = "\n".join(lines[index] for index in kept if index < len(lines))
        return f"{excerpt[:limit]}\n...\n{self.output[-1500:]}"


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
        # (unix time, what happened): the test's own actions, set against the failures'
        # timeline in the summary.
        self.marks: list[tuple[float, str]] = []

    def mark(self, what: str) -> None:
        """Note an action of the test (a reload, a kill) for the summary's timeline."""
        self.marks.append((time.time(), what))

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
        started = r.get("started_at_unix", 0.0)
        marks = ", ".join(f"t={at - started:.1f}s {what}" for at, what in self.marks)
        return (
            f"sent {r['sent']} at {r['achieved_rate']:.0f}/s, failed {r['failed']} "
            f"{r['failures_by_reason']} {r['failure_examples'][:3]}, "
            f"stale keep-alive retries {r['stale_retries']}, versions {r['versions_first_seen']}"
            f"; failures by second {r.get('failures_by_second', [])[:40]}"
            f"; the test's actions: {marks or 'none'}"
        )

    def assert_no_failed_request(self, min_rate: float = 100, context: str = "") -> None:
        """`context`: what else explains a failure (the roll's own report, say)."""
        r = self.results
        explained = f"{self.summary()}\n{context}" if context else self.summary()
        assert r["failed"] == 0, explained
        assert r["sent"] > 0 and r["achieved_rate"] >= min_rate, explained

    @property
    def last_version(self) -> str:
        return self.results["versions_in_order"][-1][0]
