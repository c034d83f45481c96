"""Helpers the integration tests use to drive and inspect the sandbox.

Deploys run exactly as a user runs them: `pyinfra` on the command line over real SSH.
Outcomes are read independently of the tool, through `docker exec` into the host
containers (the Docker SDK), so a bug in the tool cannot hide itself.
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

import docker

REPO_ROOT = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
CLUSTER_FILE = REPO_ROOT / ".sandbox" / "cluster.json"


@dataclass
class RunResult:
    returncode: int
    output: str

    def grand_total(self) -> dict[str, int]:
        """The pyinfra results table's last line: operations, changed, errors, unchanged."""
        match = re.search(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", self.output)
        assert match, f"no results table in pyinfra output:\n{self.output[-3000:]}"
        values = [0 if value == "-" else int(value) for value in match.groups()]
        return dict(zip(("operations", "changed", "errors", "unchanged"), values))


def pyinfra(*args: str, timeout: int = 900, env: dict | None = None) -> RunResult:
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


def sandbox_cli(*args: str, env: dict | None = None) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "sandbox", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert completed.returncode == 0, completed.stdout
    return completed.stdout


class World:
    """The running sandbox, as the tests see it."""

    def __init__(self):
        self.cluster = json.loads(CLUSTER_FILE.read_text())
        self.docker = docker.from_env()

    def hosts(self, group: str | None = None) -> list[str]:
        return [h["name"] for h in self.cluster["hosts"] if group in (None, h["group"])]

    def ip(self, name: str) -> str:
        return next(h["private_ip"] for h in self.cluster["hosts"] if h["name"] == name)

    def ssh_port(self, name: str) -> int:
        return next(h["ssh_port"] for h in self.cluster["hosts"] if h["name"] == name)

    def container(self, name: str):
        return self.docker.containers.get(f"deploykit-sandbox-{name}")

    def sh(self, name: str, command: str, user: str = "root") -> tuple[int, str]:
        """Run a shell command inside the host, bypassing SSH and the deploy tool."""
        result = self.container(name).exec_run(["sh", "-c", command], user=user)
        return result.exit_code, result.output.decode(errors="replace")

    def ssh(self, name: str, command: str, user: str = "deploy") -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "ssh", "-i", self.cluster["ssh_key"],
                "-o", f"UserKnownHostsFile={self.cluster['known_hosts']}",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-p", str(self.ssh_port(name)), f"{user}@127.0.0.1", command,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )

    def running_tag(self, name: str) -> str | None:
        code, output = self.sh(
            name,
            "docker ps --filter label=io.deploykit.role=app --format "
            "'{{.Label \"io.deploykit.tag\"}}'",
        )
        tags = output.split()
        assert code == 0 and len(tags) <= 1, (name, output)
        return tags[0] if tags else None

    def server_states(self, lb: str = "lb1") -> dict[str, str]:
        """HAProxy's view: server -> status (UP, DOWN, DRAIN, MAINT...)."""
        code, output = self.sh(
            lb,
            "echo 'show stat' | socat stdio unix-connect:/run/haproxy/admin.sock"
            " | awk -F, '$1 == \"web\" && $2 != \"BACKEND\" { print $2, $18 }'",
        )
        assert code == 0, output
        return dict(line.split(" ", 1) for line in output.splitlines() if line.strip())

    def can_connect(self, source: str, target: str, port: int) -> bool:
        """From inside host `source`, open TCP to `target`'s private address."""
        code, _ = self.sh(
            source,
            f"timeout 3 bash -c 'exec 3<>/dev/tcp/{self.ip(target)}/{port}' 2>/dev/null",
        )
        return code == 0


class LoadRun:
    """The gevent load generator as a subprocess, hitting only 127.0.0.1."""

    def __init__(self, urls: list[str], rate: int = 150, out_dir: Path | None = None):
        self.urls = urls
        self.rate = rate
        self.out = (out_dir or Path("/tmp")) / f"load-{os.getpid()}-{id(self)}.json"
        self.results: dict = {}

    def __enter__(self) -> "LoadRun":
        command = [sys.executable, "-m", "bench.loadgen", "--rate", str(self.rate),
                   "--slow-every", "10", "--slow-ms", "800", "--insecure",
                   "--no-records", "--json-out", str(self.out)]
        for url in self.urls:
            command += ["--url", url]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        line = self.process.stderr.readline()
        assert line.startswith("loadgen: started"), line
        time.sleep(1.5)  # a steady load before the action starts
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1.5)  # and after it ends
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.results = json.loads(self.out.read_text())
        self.out.unlink()

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
