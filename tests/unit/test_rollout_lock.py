"""The deploy lock's take and release (deploykit/rollout/lock.py) against a fake lock host:
which commands reach it, in which order, and what the audit log is told."""

from __future__ import annotations

import json
import signal
import subprocess
from types import SimpleNamespace

import pytest
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_state

from deploykit.errors import DeployRefused
from deploykit.rollout import lock
from tests.unit.fakes import FakeData

LOCK = "/var/lib/deploykit/deploy.lock"
HOLDER = '{"action": "deploy", "pid": 11, "tag": "v9", "when": "T0", "who": "carol@ci"}'


class FakeLockHost:
    """lb1 as a folder of this machine: each lock command runs for real with sh, on a
    lock file and an audit log under `folder`, and is recorded. `fail_acquire`: the
    connection drops once the take has run, before its answer comes back."""

    def __init__(self, folder):
        self.name = "lb1"
        self.connected = True
        self.folder = folder
        self.data = FakeData(
            {
                "deploy_lock_file": str(folder / "lib" / "deploy.lock"),
                "deploy_audit_log": str(folder / "log" / "audit.log"),
            }
        )
        self.fail_acquire: Exception | None = None
        self.commands: list[str] = []

    def run(self, command: str) -> tuple[bool, str]:
        self.commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        if "set -C" in command and self.fail_acquire:
            raise self.fail_acquire
        return done.returncode == 0, done.stdout.strip()

    def kinds(self) -> list[str]:
        names = {"set -C": "acquire", "grep -qF": "release", "audit.log": "audit"}
        return [next(v for k, v in names.items() if k in c) for c in self.commands]

    def lock_record(self) -> dict | None:
        path = self.folder / "lib" / "deploy.lock"
        return json.loads(path.read_text()) if path.exists() else None

    def hold_lock(self, record: str) -> None:
        (self.folder / "lib").mkdir(exist_ok=True)
        (self.folder / "lib" / "deploy.lock").write_text(record + "\n")

    def audit_entries(self) -> list[dict]:
        path = self.folder / "log" / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def lb(monkeypatch, tmp_path):
    host = FakeLockHost(tmp_path)
    registered = []
    monkeypatch.setattr(lock, "lock_host", lambda: host)
    monkeypatch.setattr(lock, "run_on", lambda target, command: target.run(command))
    monkeypatch.setattr(lock, "is_dry_run", lambda: False)
    monkeypatch.setattr(lock, "repo_revision", lambda: "abc123")
    monkeypatch.setattr(lock.atexit, "register", lambda *call: registered.append(call))
    monkeypatch.setattr(lock, "_held", {})
    # once_per_run keeps a plan per run: each test is a run of its own.
    monkeypatch.setattr("deploykit.preflight._planned", {})
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    run = SimpleNamespace(failed_hosts=set(), current_stage=StateStage.Prepare)
    with ctx_state.use(run):
        host.run_state = run
        host.at_exit = lambda: [function(*args) for function, *args in registered]
        yield host
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_taken_lock_is_audited_then_released_and_audited_at_exit(lb):
    lock.take_deploy_lock("deploy", "v2", ["web1", "web2"])
    assert lb.kinds() == ["acquire", "audit"]
    assert lb.lock_record()["who"] == lock.deployer()
    lb.run_state.current_stage = StateStage.Disconnect
    lb.at_exit()
    assert lb.kinds() == ["acquire", "audit", "release", "audit"]
    assert lb.lock_record() is None
    started, finished = lb.audit_entries()
    assert (started["event"], finished["event"], finished["result"]) == (
        "started",
        "finished",
        "succeeded",
    )
    assert "token" not in started and started["hosts"] == ["web1", "web2"]


def test_the_release_is_registered_before_the_take_so_an_ssh_error_leaves_no_orphan(lb):
    # The lock file may have been created before the connection dropped: the exit must
    # still release it (by this run's token, so never someone else's).
    lb.fail_acquire = EOFError("SSH session closed")
    with pytest.raises(DeployRefused, match="could not take the deploy lock .*SSH session"):
        lock.take_deploy_lock("deploy", "v2", ["web1"])
    assert lb.lock_record() is not None  # taken, unseen
    lb.at_exit()
    assert lb.kinds() == ["acquire", "release"]
    assert lb.lock_record() is None
    assert lb.audit_entries() == []  # it never started


def test_an_exit_after_a_failed_take_never_removes_another_runs_lock(lb):
    lb.fail_acquire = EOFError("SSH session closed")
    lb.hold_lock(HOLDER)  # taken by another run: ours failed to create it
    with pytest.raises(DeployRefused):
        lock.take_deploy_lock("deploy", "v2", ["web1"])
    lb.at_exit()
    assert lb.lock_record() == json.loads(HOLDER)


def test_a_lock_held_by_another_run_is_neither_released_nor_audited_at_exit(lb):
    lb.hold_lock(HOLDER)
    with pytest.raises(DeployRefused, match="another deploy holds the lock on lb1 .*carol@ci"):
        lock.take_deploy_lock("deploy", "v2", ["web1"])
    lb.at_exit()
    assert lb.kinds() == ["acquire"]
    assert lb.lock_record() == json.loads(HOLDER)


def test_the_lock_is_taken_once_per_run_whatever_asks_again(lb):
    lock.take_deploy_lock("deploy", "v2", ["web1"])
    lock.take_deploy_lock("jobs", "v2", ["job1"])
    lock.take_deploy_lock("provision")
    assert lb.kinds() == ["acquire", "audit"]


def test_a_run_interrupted_during_its_operations_is_audited_as_such(lb):
    lock.take_deploy_lock("provision", hosts=["lb1"])
    lb.run_state.current_stage = StateStage.Execute
    lb.at_exit()
    assert lb.audit_entries()[-1]["result"] == "interrupted"


def test_a_run_that_never_reached_its_operations_is_audited_as_not_run(lb):
    lock.take_deploy_lock("provision", hosts=["lb1"])
    lb.at_exit()
    assert lb.audit_entries()[-1]["result"] == "not run"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_terminate_and_hangup_do_what_ctrl_c_does_and_are_audited(lb, signum):
    interrupts = []
    signal.signal(signal.SIGINT, lambda number, frame: interrupts.append(number))
    lock.take_deploy_lock("deploy", "v2", ["web1"])
    signal.getsignal(signum)(signum, None)
    # Ctrl-C's handler ran, once, told which signal it was.
    assert interrupts == [signum]
    lb.at_exit()
    assert lb.kinds()[-2:] == ["release", "audit"]
    assert lb.audit_entries()[-1]["signal"] == signal.Signals(signum).name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_take_is_on_its_way_still_ends_like_ctrl_c(lb, signum):
    # The lock file exists on the LB before the run hears back: a SIGHUP at that moment
    # once took its default action (no exit handler) and left the lock held.
    handlers = []
    original_run = lb.run

    def run_and_see_the_handler(command):
        if "set -C" in command:
            handlers.append(signal.getsignal(signum))
        return original_run(command)

    lb.run = run_and_see_the_handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    lock.take_deploy_lock("deploy", "v2", ["web1"])
    handler = handlers[0]
    assert handler not in (signal.SIG_DFL, signal.SIG_IGN, None)
    with pytest.raises(KeyboardInterrupt):
        handler(signum, None)
    lb.at_exit()
    assert lb.lock_record() is None
    assert lb.audit_entries()[-1]["signal"] == signal.Signals(signum).name


def test_a_oneoff_is_audited_by_its_command_name_not_its_arguments(lb):
    lock.take_deploy_lock("oneoff", "v2", ["web1"], command=["psql", "-c", "UPDATE t SET pw='x'"])
    assert lb.lock_record()["command"] == "psql"
    assert lb.audit_entries()[0]["command"] == "psql"
    assert "pw=" not in "".join(lb.commands)


def test_a_setting_keeps_a_oneoffs_whole_command_line(lb):
    lb.data["deploy_audit_oneoff_arguments"] = True
    lock.take_deploy_lock("oneoff", "v2", ["web1"], command=["manage.py", "migrate", "app 2"])
    assert lb.audit_entries()[0]["command"] == "manage.py migrate 'app 2'"
