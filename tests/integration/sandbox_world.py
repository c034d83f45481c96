"""Helpers the integration tests use to drive and inspect the sandbox.

Deploys run exactly as a user runs them: `pyinfra` on the command line over real SSH.
Outcomes are read independently of the tool, through `docker exec` into the host
containers (the Docker SDK), so a bug in the tool cannot hide itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from bench.harness import (  # noqa: F401  (shared with the demo)
    CLUSTER_FILE,
    PYINFRA,
    REPO_ROOT,
    LoadRun,
    RunResult,
    lb_urls,
    pyinfra,
    registry_from_here,
)

# A PostgreSQL client (psql, and psycopg2 for the app's code) for the tests, run in a
# host's network namespace (its address, its firewall) without installing anything on
# the host itself. Tagged by its recipe, so a changed recipe builds a new image.
PG_CLIENT_DOCKERFILE = """\
FROM deploykit/sandbox-base:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client \\
    python3-psycopg2 && rm -rf /var/lib/apt/lists/*
"""
PG_CLIENT_IMAGE = (
    "deploykit/sandbox-pgclient:" + hashlib.sha256(PG_CLIENT_DOCKERFILE.encode()).hexdigest()[:12]
)


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

    def release(self, name: str) -> str:
        """The Debian release the sandbox created the host with (trixie, bookworm)."""
        return next(h["release"] for h in self.cluster["hosts"] if h["name"] == name)

    def os_release(self, name: str) -> dict[str, str]:
        """The host's own /etc/os-release, as key -> value."""
        code, output = self.sh(name, "cat /etc/os-release")
        assert code == 0, output
        pairs = (line.split("=", 1) for line in output.splitlines() if "=" in line)
        return {key: value.strip('"') for key, value in pairs}

    def postgres_major(self, name: str = "db1") -> int:
        """The major version of the host's one PostgreSQL cluster, from its own files."""
        code, output = self.sh(name, "ls -1 /etc/postgresql")
        majors = [int(word) for word in output.split() if word.isdigit()]
        assert code == 0 and len(majors) == 1, output
        return majors[0]

    def postgres_service(self, name: str = "db1") -> str:
        return f"postgresql@{self.postgres_major(name)}-main.service"

    def container(self, name: str):
        return self.docker.containers.get(self.cluster["container_prefix"] + name)

    def sh(self, name: str, command: str, user: str = "root") -> tuple[int, str]:
        """Run a shell command inside the host, bypassing SSH and the deploy tool."""
        result = self.container(name).exec_run(["sh", "-c", command], user=user)
        return result.exit_code, result.output.decode(errors="replace")

    def ssh(self, name: str, command: str, user: str = "deploy") -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "ssh",
                "-i",
                self.cluster["ssh_key"],
                "-o",
                f"UserKnownHostsFile={self.cluster['known_hosts']}",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-p",
                str(self.ssh_port(name)),
                f"{user}@127.0.0.1",
                command,
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

    def running_versions(self, name: str, role: str = "app") -> set[tuple[str, str]]:
        """(tag label, image ID) of each running container of `role` on the host."""
        code, output = self.sh(
            name,
            f"docker ps --filter label=io.deploykit.role={role} --format '{{{{.ID}}}}'"
            " | xargs --no-run-if-empty docker inspect --format"
            " '{{index .Config.Labels \"io.deploykit.digest\"}} {{.Image}}'",
        )
        assert code == 0, (name, output)
        return {tuple(line.split()) for line in output.splitlines() if line.strip()}

    def set_server_state(self, lb: str, server: str, state: str) -> None:
        """Drive HAProxy's runtime API on `lb` directly, as an operator would, until the
        worker that serves holds the state: a plain `set server` right after a reload can
        reach the old worker and be lost (issue 13, item 7)."""
        from deploykit.commands.haproxy import change_server_state

        code, output = self.sh(
            lb, change_server_state("/run/haproxy/admin.sock", "web", server, state)
        )
        assert code == 0 and not output.strip(), output

    def haproxy_worker(self, lb: str) -> str:
        """The pid of the newest worker of HAProxy's master on `lb`."""
        code, output = self.sh(
            lb, 'pgrep -n -P "$(systemctl show --property MainPID --value haproxy)"'
        )
        assert code == 0 and output.strip(), output
        return output.strip()

    def serving_admin_state(self, lb: str, server: str, replaced_worker: str) -> int:
        """`server`'s admin state (`show servers state`: 0 ready, 8 drain, 1 maint) as
        the worker that serves after a reload reports it: a worker newer than
        `replaced_worker`, the master's newest, answering the runtime API."""
        script = (
            "set -- $(echo 'show info; show servers state web'"
            " | socat stdio unix-connect:/run/haproxy/admin.sock"
            f' | awk \'$1 == "Pid:" {{ p = $2 }} $4 == "{server}" {{ a = $7 }}'
            " END { print p, a }');"
            f' [ "$1" != {replaced_worker} ]'
            ' && [ "$1" = "$(pgrep -n -P "$(systemctl show --property MainPID --value haproxy)")" ]'
            ' && echo "$2"'
        )

        def state():
            code, output = self.sh(lb, script)
            return output.strip() if code == 0 and output.strip() else None

        return int(wait_for(state, timeout=60, interval=0.2, what=f"{lb}'s new worker"))

    def server_states(self, lb: str = "lb1") -> dict[str, str]:
        """HAProxy's view: server -> status (UP, DOWN, DRAIN, MAINT...)."""
        code, output = self.sh(
            lb,
            # -t 5: socat's default 0.5 s after its input ends can cut a slow answer short.
            "echo 'show stat' | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock"
            ' | awk -F, \'$1 == "web" && $2 != "BACKEND" { print $2, $18 }\'',
        )
        assert code == 0, output
        return dict(line.split(" ", 1) for line in output.splitlines() if line.strip())

    def server_changes(self, lb: str = "lb1", last: int = 12) -> str:
        """HAProxy's last server state changes and why (a failed check's reason and
        duration): what explains a server found DOWN."""
        code, output = self.sh(
            lb, f"grep -E 'Server [^ ]+ is (UP|DOWN)' /var/log/haproxy.log | tail -n {last}"
        )
        return output if code == 0 else f"(no haproxy.log on {lb}: {output})"

    def wait_for_ssh(self, name: str, timeout: float = 120) -> None:
        """After a host container (re)starts: until the deploy user can log in."""
        wait_for(
            lambda: self.ssh(name, "systemctl is-system-running --wait").returncode in (0, 1),
            timeout=timeout,
            interval=1,
            what=f"{name} to boot",
        )

    def redis_cli(self, *args: str, host: str = "db1") -> str:
        """redis-cli on the Redis host, authenticated; the password goes through the
        environment (REDISCLI_AUTH), never on a command line."""
        password = self.secrets()["REDIS_PASSWORD"]
        result = self.container(host).exec_run(
            ["redis-cli", "--no-auth-warning", *args], environment={"REDISCLI_AUTH": password}
        )
        output = result.output.decode(errors="replace")
        assert result.exit_code == 0, output
        return output.strip()

    def secrets(self) -> dict[str, str]:
        from deploykit.secrets import parse_dotenv

        path = Path(self.cluster["secrets_file"])
        return parse_dotenv(path.read_text(), str(path))

    def can_connect(self, source: str, target: str, port: int) -> bool:
        """From inside host `source`, open TCP to `target`'s private address."""
        code, _ = self.sh(
            source,
            f"timeout 3 bash -c 'exec 3<>/dev/tcp/{self.ip(target)}/{port}' 2>/dev/null",
        )
        return code == 0

    def psql(self, source: str, target: str, sql: str, password: str, **options: str):
        """Run `sql` with psql from inside host `source`'s network namespace against
        `target`'s private address, as user app; the password goes through a 0600
        pgpass file, never the command line. Returns (exit code, output)."""
        conninfo = {
            "host": self.ip(target),
            "user": "app",
            "dbname": "app",
            "sslmode": "require",
            "connect_timeout": "5",
            **options,
        }
        dsn = " ".join(f"{key}={value}" for key, value in conninfo.items())
        return self.run_pg_client(
            source,
            ["psql", dsn, "-X", "-A", "-t", "-c", sql],
            private_files={"/pgpass": f"*:*:*:*:{password}\n"},
            environment={"PGPASSFILE": "/pgpass"},
        )

    def run_pg_client(
        self,
        source: str,
        command: list[str],
        private_files: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
        mounts: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """Run `command` in the PostgreSQL client image inside host `source`'s network
        namespace. `private_files` (container path -> content) are mounted read-only
        from 0600 files; `mounts` maps container paths to files of this machine."""
        _ensure_pg_client_image(self.docker)
        with tempfile.TemporaryDirectory(prefix="deploykit-pgclient-") as folder:
            volumes = {
                str(Path(local).resolve()): {"bind": path, "mode": "ro"}
                for path, local in (mounts or {}).items()
            }
            for number, (path, content) in enumerate((private_files or {}).items()):
                local = Path(folder) / f"private-{number}"
                local.touch(mode=0o600)
                local.write_text(content)
                volumes[str(local)] = {"bind": path, "mode": "ro"}
            container = self.docker.containers.run(
                PG_CLIENT_IMAGE,
                command,
                network_mode=f"container:{self.container(source).name}",
                volumes=volumes,
                environment=environment or {},
                detach=True,
            )
            try:
                code = container.wait(timeout=60)["StatusCode"]
                return code, container.logs().decode(errors="replace")
            finally:
                container.remove(force=True)


def _ensure_pg_client_image(client) -> None:
    try:
        client.images.get(PG_CLIENT_IMAGE)
    except docker.errors.ImageNotFound:
        client.images.build(
            fileobj=io.BytesIO(PG_CLIENT_DOCKERFILE.encode()), tag=PG_CLIENT_IMAGE, rm=True
        )


# The deploy lock and the audit log on lb1 (rollout/lock.py), at their default paths.
LOCK = "/var/lib/deploykit/deploy.lock"
AUDIT = "/var/log/deploykit/audit.log"


def audit_entries(fleet: World) -> list[dict]:
    _, text = fleet.sh("lb1", f"cat {AUDIT} 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def lock_exists(fleet: World) -> bool:
    return fleet.sh("lb1", f"test -e {LOCK}")[0] == 0


def deploy_args(tag: str, *extra: str) -> list[str]:
    """The arguments of a roll of the sandbox's web hosts to `tag`."""
    return ["inventories/sandbox.py", "deploys/web.py", "--data", f"image_tag={tag}", *extra]


def pushed_digest(tag: str) -> str:
    """The manifest digest of app:TAG as this machine pushed it to the sandbox registry."""
    repository = f"{registry_from_here()}/deploykit/app"
    found = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            f"{repository}:{tag}",
            "--format",
            "{{range .RepoDigests}}{{println .}}{{end}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    digests = [line.split("@", 1)[1] for line in found if line.startswith(repository + "@")]
    assert len(digests) == 1, (tag, found)
    return digests[0]


def local_image_id(tag: str) -> str:
    """The image ID of app:TAG on this machine (the same on every host that pulled it)."""
    return subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            f"{registry_from_here()}/deploykit/app:{tag}",
            "--format",
            "{{.Id}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def other_tag(fleet: World) -> str:
    """Of v1 and v2, the one web1 does not run: a roll that changes something."""
    return "v2" if fleet.running_tag("web1") == "v1" else "v1"


def wait_for(predicate, timeout: float = 120, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class BackgroundPyinfra:
    """A pyinfra run in the background, for faults injected while it works."""

    def __init__(self, *args: str, env: dict | None = None):
        self.log = Path(f"/tmp/deploykit-bg-{os.getpid()}-{id(self)}.log")
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [PYINFRA, "-y", *args],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def wait(self, timeout: float = 900) -> RunResult:
        self.process.wait(timeout=timeout)
        output = self.log.read_text()
        self.log.unlink()
        return RunResult(self.process.returncode, output)


def group_data(name: str) -> dict:
    """The repository's group_data/NAME.py as the inventory sees it (its settings)."""
    return runpy.run_path(str(REPO_ROOT / "group_data" / f"{name}.py"))


def copy_sandbox_inventory(folder: Path, extra: str = "") -> Path:
    """inventories/sandbox.py in another folder (beside a group_data of the test's own),
    with `extra` appended, such as `web = []`."""
    text = (REPO_ROOT / "inventories" / "sandbox.py").read_text()
    text = text.replace(
        'Path(__file__).resolve().parent.parent / ".sandbox"', f'Path("{REPO_ROOT}/.sandbox")'
    )
    path = folder / "sandbox.py"
    path.write_text(text + extra)
    return path
