"""One fake fleet for every roll: web hosts with app + nginx pairs, job hosts with
workers, load balancers that drain and re-admit. It keeps each host's containers as
Docker would (role, tag, release, slot, state, from the labels of the commands it
runs), answers the roll's commands from them, and records each command as a short
event, so a test reads as the sequence an operator would see:

    web1: list, lb1: drain, web1: start app, ..., job1: stop worker-1-v1-20260101
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gevent

from deploykit.commands.haproxy import LAST_SERVER
from deploykit.commands.shell import TIMED_OUT
from deploykit.rollout.engine import CommandResult
from deploykit.rollout.pyinfra_fleet import PyinfraFleet, supervise

RELEASE = "20260101"
WORKER = r"(worker-[\w.-]+)"
# Command pattern -> event; "{}" takes the pattern's group (a container's name).
EVENTS = [
    (r"after=\$\(", "observe"),
    (r'\$2 != "BACKEND" \{ print', "show servers"),
    (r"state drain", "drain"),
    (r"state ready", "ready"),
    (r"docker ps --all", "list"),
    (r"docker run .*--name app-", "start app"),
    (r"docker run .*--name nginx-", "start nginx"),
    (rf"docker run .*--name {WORKER}", "start {}"),
    (r'"\$ip":8000/up', "check app"),
    (r"127\.0\.0\.1:80/up", "check pair"),
    (rf"since=.*StartedAt.*' {WORKER}\)", "wait ready {}"),
    (rf"docker stop --time \d+ {WORKER} && docker rm", "stop and remove {}"),
    (rf"docker stop --time \d+ {WORKER}", "stop {}"),
    (r"docker stop --time \d+ nginx-", "stop old nginx"),
    (r"docker stop --time \d+ app-", "stop old app"),
    (r"docker start app-", "restart old app"),
    (r"docker start nginx-", "restart old nginx"),
    (rf"docker start {WORKER}", "start again {}"),
    (r"docke\[r\] run .*release=v2-", "remove new pair"),
    (r"docke\[r\] run", "remove"),
    (rf"docker rm --force --volumes {WORKER}", "remove {}"),
    (r">> /var/lib/deploykit/releases.*docker image ls", "record and prune"),
]


def observed(responses: int = 100, errors: int = 0, retries: int = 0, pid: int = 1) -> str:
    """What observe_server prints when a server answered this during the window."""
    return f"before={pid},0,0,0 after={pid},{responses},{errors},{retries}"


@dataclass
class Container:
    role: str  # app, nginx, worker
    tag: str
    release: str
    state: str = "running"
    slot: int = 0
    digest: str = ""

    @property
    def name(self) -> str:
        if self.role == "worker":
            return f"worker-{self.slot}-{self.release}"
        return f"{self.role}-{self.release}"


class FakeFleet:
    def __init__(
        self,
        tags: dict[str, str | None] | None = None,
        workers: dict[str, list[tuple[int, str, str, str]]] | None = None,
        fail: dict[tuple[str, str], int] | None = None,
        concurrent: bool = False,
        defer_background: bool = False,
        other_servers: tuple[str, ...] = ("web0",),
    ):
        """+ tags: web host -> the version its pair runs, TAG or TAG@DIGEST (None: nothing
          deployed yet)
        + workers: job host -> its workers as (slot, version, release, state)
        + fail: (host, event) -> the exit status that command returns
        + other_servers: servers of the LBs' backend that the roll leaves alone (UP unless
          a test says otherwise)
        + concurrent: run `parallel` calls in greenlets that take turns at each command
          (the real runner, pyinfra_fleet.supervise), instead of one after the other;
          `background` calls too (PyinfraFleet.background)
        + defer_background: run a `background` call only when it is waited for, as late
          as the real one may run (else at once: the order most tests read)"""
        self.containers: dict[str, list[Container]] = {}
        self.web_hosts = list(tags or {})
        self.servers = [*other_servers, *self.web_hosts]
        # (lb, server) -> HAProxy's status for it; every server starts UP.
        self.lb_states: dict[tuple[str, str], str] = {}
        self.concurrent = concurrent
        self.defer_background = defer_background
        # (number of the command, counted from 0; the error it raises; whether the
        # command took effect on the host first, its answer lost).
        self.raise_at: tuple[int, BaseException, bool] | None = None
        self.limits: list[float | None] = []
        for host, version in (tags or {}).items():
            tag, _, digest = (version or "").partition("@")
            self.containers[host] = (
                [Container(r, tag, f"{tag}-{RELEASE}", digest=digest) for r in ("app", "nginx")]
                if version
                else []
            )
        for host, rows in (workers or {}).items():
            self.containers[host] = []
            for slot, version, release, state in rows:
                tag, _, digest = version.partition("@")
                self.containers[host].append(Container("worker", tag, release, state, slot, digest))
        self.fail = fail or {}
        # Canary gate answers: web host -> what observe_server prints for it.
        self.observation: dict[str, str] = {}
        self.lb_hosts: set[str] = set()
        self.events: list[str] = []
        # (host, command) of every command run, in order.
        self.commands: list[tuple[str, str]] = []
        self.messages: list[str] = []

    # -- what a test reads ------------------------------------------------------------------

    def serving_tag(self, host: str) -> str | None:
        """The tag of the host's running nginx (what the LBs send traffic to)."""
        running = [c for c in self.containers[host] if c.role == "nginx" and c.state == "running"]
        return running[-1].tag if running else None

    def serving_version(self, host: str) -> str | None:
        """TAG@DIGEST (TAG when unpinned) of the host's running nginx."""
        running = [c for c in self.containers[host] if c.role == "nginx" and c.state == "running"]
        if not running:
            return None
        return f"{running[-1].tag}@{running[-1].digest}" if running[-1].digest else running[-1].tag

    def lb_state(self, lb: str, server: str) -> str:
        return self.lb_states.get((lb, server), "UP")

    def out_of_rotation(self) -> dict[tuple[str, str], str]:
        """(lb, server) -> status, of every server an LB that the roll drove does not
        send traffic to."""
        return {
            (lb, server): self.lb_state(lb, server)
            for lb in sorted(self.lb_hosts)
            for server in self.servers
            if self.lb_state(lb, server) != "UP"
        }

    def workers(self, host: str) -> list[tuple[int, str, str, str]]:
        return [
            (c.slot, c.tag, c.release, c.state) for c in self.containers[host] if c.role == "worker"
        ]

    # -- the Fleet protocol ------------------------------------------------------------------

    def classify(self, command: str) -> tuple[str, str]:
        for pattern, event in EVENTS:
            match = re.search(pattern, command)
            if match:
                name = match.group(1) if match.groups() else ""
                return event.format(name), name
        raise AssertionError(f"unexpected command: {command}")

    def run(
        self, host: str, command: str, sudo: bool = False, limit_s: float | None = None
    ) -> CommandResult:
        if self.concurrent:
            gevent.sleep(0)  # the other greenlets of a batch take their turn
        event, name = self.classify(command)
        number = len(self.events)
        self.events.append(f"{host}: {event}")
        self.commands.append((host, command))
        self.limits.append(limit_s)
        interrupt = self.raise_at if self.raise_at and self.raise_at[0] == number else None
        if interrupt and not interrupt[2]:
            raise interrupt[1]
        result = self._answer(host, event, name, command)
        if interrupt:
            raise interrupt[1]
        return result

    def _answer(self, host: str, event: str, name: str, command: str) -> CommandResult:
        code = self.fail.get((host, event), 0)
        if event == "list":
            return CommandResult(0, self._listing(host, command), "")
        if code:
            return CommandResult(code, "", "boom")
        if event in ("drain", "ready", "show servers"):
            return self._load_balancer(host, event, command)
        self._apply(host, event, name, command)
        waits = ("check app", "check pair")
        stdout = "waited_ms=100" if event in waits or event.startswith("wait ready") else ""
        if event == "observe":
            server = re.search(r"-v s=(\S+)", command).group(1)
            stdout = self.observation.get(server, observed())
        return CommandResult(0, stdout, "")

    def background(self, call):
        if self.concurrent:
            return PyinfraFleet.background(self, call)
        outcome = []

        def run():
            try:
                outcome.append((call(), None))
            except BaseException as error:  # noqa: BLE001 (raised by wait)
                outcome.append((None, error))

        def wait():
            if not outcome:
                run()
            value, error = outcome[0]
            if error is not None:
                raise error
            return value

        if not self.defer_background:
            run()
        return wait

    def parallel(self, calls):
        if self.concurrent:
            return supervise(calls)
        return [call() for call in calls]

    def log(self, message: str) -> None:
        self.messages.append(message)

    # -- the load balancers ------------------------------------------------------------------

    def _load_balancer(self, lb: str, event: str, command: str) -> CommandResult:
        self.lb_hosts.add(lb)
        if event == "show servers":
            rows = [f"{server} {self.lb_state(lb, server)} 0" for server in self.servers]
            return CommandResult(0, "".join(f"{row}\n" for row in rows), "")
        server = re.search(r"-v s=(\S+)", command).group(1)
        if event == "drain":
            out = re.search(r"-v out='([^']*)'", command)
            if out:
                skipped = {server, *out.group(1).split()}
                others = [s for s in self.servers if s not in skipped]
                if not any(self.lb_state(lb, s) == "UP" for s in others):
                    down = ", ".join(f"{s} {self.lb_state(lb, s)}" for s in others)
                    return CommandResult(LAST_SERVER, "", f"no other server is UP: {down}")
            self.lb_states[(lb, server)] = "MAINT"
            return CommandResult(0, "waited_ms=100", "")
        # ready: UP once its health check passes, i.e. while an nginx serves on the host.
        if self.serving_tag(server) is None:
            self.lb_states[(lb, server)] = "DOWN"
            return CommandResult(TIMED_OUT, "waited_ms=100", "timed out: status DOWN")
        self.lb_states[(lb, server)] = "UP"
        return CommandResult(0, "waited_ms=100", "")

    # -- the hosts' Docker -------------------------------------------------------------------

    def _listing(self, host: str, command: str) -> str:
        containers = self.containers.get(host, [])
        if "role=worker" in command:
            rows = [
                f"{c.slot} {c.tag} {c.release} {c.state} {c.digest or '-'}"
                for c in containers
                if c.slot
            ]
        else:
            rows = [f"{c.role} {c.tag} {c.release} {c.state} {c.digest or '-'}" for c in containers]
        return "".join(f"{row}\n" for row in rows)

    def _apply(self, host: str, event: str, name: str, command: str) -> None:
        containers = self.containers.setdefault(host, [])
        by_name = {c.name: c for c in containers}
        if event.startswith("start ") and "docker run" in command:
            labels = dict(re.findall(r"io\.deploykit\.(\w+)=(\S+)", command))
            containers.append(
                Container(
                    labels["role"],
                    labels["tag"],
                    labels["release"],
                    slot=int(labels.get("slot", 0)),
                    digest=labels.get("digest", ""),
                )
            )
        elif event in ("stop old nginx", "stop old app"):
            role = event.removeprefix("stop old ")
            stopped = re.search(rf"docker stop --time \d+ ({role}-[\w.-]+)", command).group(1)
            by_name[stopped].state = "exited"
            removed = re.search(r"docker rm --force --volumes ([^;]+)", command)
            if removed:
                self._remove(host, removed.group(1).split())
        elif name and event.startswith(("remove ", "stop and remove ")):
            self._remove(host, [name])
        elif event.startswith("stop ") and name:
            by_name[name].state = "exited"
        elif event.startswith(("restart old", "start again")):
            started = re.search(r"docker start (\S+)", command).group(1)
            by_name[started].state = "running"
        elif event in ("remove new pair", "remove"):
            release = re.search(r"release=([\w.-]+)", command).group(1)
            self.containers[host] = [c for c in containers if c.release != release]

    def _remove(self, host: str, names: list[str]) -> None:
        self.containers[host] = [c for c in self.containers[host] if c.name not in names]
