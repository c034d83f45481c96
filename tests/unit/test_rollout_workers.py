"""The job workers' roll, replayed against a fake fleet (the order an operator would
see), and its command builders by exact string."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deploykit.commands.containers import wait_log_line
from deploykit.commands.workers import WorkerContainer, list_workers, parse_workers, start_worker
from deploykit.rollout.engine import RolloutFailed
from deploykit.rollout.workers import WorkerRoll, WorkerRollSettings
from tests.unit.fake_fleet import FakeFleet
from tests.unit.fakes import FakeData, install_stubs, run_with_stubs, waited_ms

# The documented defaults (components/jobs.py).
SETTINGS = WorkerRollSettings.from_data(
    FakeData(app_image="registry:5000/deploykit/app"), "v2", run_id="20261127"
)


# -- command builders -----------------------------------------------------------------------


def test_start_worker_runs_the_app_image_with_the_worker_command_and_a_stable_id():
    worker = WorkerContainer(slot=2, release="v2-20261127", tag="v2")
    command = start_worker(
        worker,
        "job1",
        "registry:5000/deploykit/app:v2",
        network="deploykit-app",
        env_file="/etc/deploykit/app.env",
        stop_timeout_s=60,
        command=["python3", "/app/worker.py"],
    )
    assert command == (
        "docker run --detach --name worker-2-v2-20261127 --network deploykit-app"
        " --restart unless-stopped --no-healthcheck --stop-timeout 60"
        " --env-file /etc/deploykit/app.env --env WORKER_ID=job1-2"
        " --label io.deploykit.role=worker --label io.deploykit.tag=v2"
        " --label io.deploykit.release=v2-20261127 --label io.deploykit.slot=2"
        " registry:5000/deploykit/app:v2 python3 /app/worker.py"
    )


def test_list_workers_and_parse_them():
    assert list_workers() == (
        "docker ps --all --filter label=io.deploykit.role=worker --format"
        ' \'{{.Label "io.deploykit.slot"}} {{.Label "io.deploykit.tag"}}'
        ' {{.Label "io.deploykit.release"}} {{.State}} {{or (.Label "io.deploykit.digest") "-"}}\''
    )
    digest = "sha256:" + "d" * 64
    output = f"1 v1 v1-20260101 running {digest}\n2 v1 v1-20260101 exited -\n x y z\n"
    assert parse_workers(output) == [
        (WorkerContainer(1, "v1-20260101", "v1", digest), "running"),
        (WorkerContainer(2, "v1-20260101", "v1"), "exited"),
    ]


DOCKER_STUB = """#!/bin/sh
# inspect answers from $STUB_DIR/state ("true false" while running); logs from $STUB_DIR/logs.
case "$1" in
  inspect) case "$3" in *StartedAt*) echo 2026-11-27T00:00:00.5Z ;;
           *) cat "$STUB_DIR/state" ;; esac ;;
  logs) echo "$@" >> "$STUB_DIR/logs-args"; cat "$STUB_DIR/logs" ;;
esac
"""


@pytest.fixture
def docker_stub(tmp_path):
    return install_stubs(tmp_path, {"docker": DOCKER_STUB}), tmp_path


def test_wait_log_line_returns_once_the_line_is_logged_since_the_latest_start(docker_stub):
    bin_dir, stub_dir = docker_stub
    (stub_dir / "state").write_text("true false\n")
    (stub_dir / "logs").write_text("worker ready: job1-1 version v2\n")
    result = run_with_stubs(wait_log_line("worker-1-x", "worker ready", 5), bin_dir, stub_dir)
    assert result.returncode == 0, result.stderr
    assert waited_ms(result.stdout) < 1000
    assert "--since 2026-11-27T00:00:00.5Z worker-1-x" in (stub_dir / "logs-args").read_text()


def test_wait_log_line_fails_fast_when_the_container_stops(docker_stub):
    bin_dir, stub_dir = docker_stub
    (stub_dir / "state").write_text("false false\n")
    (stub_dir / "logs").write_text("worker job1-1: ConnectionError: refused\n")
    result = run_with_stubs(wait_log_line("worker-1-x", "worker ready", 5), bin_dir, stub_dir)
    assert result.returncode == 4
    assert result.stderr.splitlines() == [
        "worker job1-1: ConnectionError: refused",
        "container worker-1-x stopped running (its last log lines above)",
    ]


def test_wait_log_line_gives_up_after_its_timeout(docker_stub):
    bin_dir, stub_dir = docker_stub
    (stub_dir / "state").write_text("true false\n")
    (stub_dir / "logs").write_text("still connecting\n")
    result = run_with_stubs(wait_log_line("worker-1-x", "worker ready", 0.3), bin_dir, stub_dir)
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == "worker-1-x logged no 'worker ready' within 0.3s"


# -- the roll's order -------------------------------------------------------------------------


def roll(fleet, hosts, **overrides):
    return WorkerRoll(fleet, replace(SETTINGS, **overrides), hosts, clock=lambda: 0.0)


def test_hosts_roll_one_after_the_other_old_worker_stopped_before_the_new_starts():
    fleet = FakeFleet(workers={h: [(1, "v1", "v1-20260101", "running")] for h in ("job1", "job2")})
    reports = roll(fleet, ["job1", "job2"]).run()
    per_host = [
        "list",
        "stop worker-1-v1-20260101",
        "start worker-1-v2-20261127",
        "wait ready worker-1-v2-20261127",
        "list",
        "remove worker-1-v1-20260101",
        "record and prune",
    ]
    assert fleet.events == [f"job1: {e}" for e in per_host] + [f"job2: {e}" for e in per_host]
    assert [(r.host, str(r.old_version), str(r.new_version), r.result) for r in reports] == [
        ("job1", "v1", "v2", "updated"),
        ("job2", "v1", "v2", "updated"),
    ]
    assert fleet.workers("job1") == [(1, "v2", "v2-20261127", "running")]


def test_each_slot_is_replaced_in_turn():
    fleet = FakeFleet(
        workers={"job1": [(1, "v1", "v1-1", "running"), (2, "v1", "v1-1", "running")]}
    )
    roll(fleet, ["job1"], workers_per_host=2).run()
    assert [e for e in fleet.events if "stop" in e or "start" in e] == [
        "job1: stop worker-1-v1-1",
        "job1: start worker-1-v2-20261127",
        "job1: stop worker-2-v1-1",
        "job1: start worker-2-v2-20261127",
    ]


def test_a_new_worker_that_does_not_come_up_is_removed_the_old_one_restarted_and_the_roll_stops():
    fleet = FakeFleet(
        workers={h: [(1, "v1", "v1-20260101", "running")] for h in ("job1", "job2")},
        fail={("job1", "wait ready worker-1-v2-20261127"): 4},
    )
    with pytest.raises(RolloutFailed) as failure:
        roll(fleet, ["job1", "job2"]).run()
    assert failure.value.host == "job1"
    assert "new worker worker-1-v2-20261127 ready check failed: exit 4" in failure.value.reason
    assert fleet.events == [
        "job1: list",
        "job1: stop worker-1-v1-20260101",
        "job1: start worker-1-v2-20261127",
        "job1: wait ready worker-1-v2-20261127",
        "job1: remove worker-1-v2-20261127",
        "job1: start again worker-1-v1-20260101",
        "job1: wait ready worker-1-v1-20260101",
        "job1: list",  # read back: the old worker really runs again
    ]
    assert fleet.workers("job1") == [(1, "v1", "v1-20260101", "running")]
    assert not any(e.startswith("job2") for e in fleet.events)


def test_a_host_already_on_the_tag_is_left_running_and_leftovers_are_removed():
    fleet = FakeFleet(
        workers={
            "job1": [
                (1, "v1", "v1-20260101", "exited"),  # left by an interrupted roll
                (1, "v2", "v2-20261126", "running"),
                (2, "v2", "v2-20261126", "running"),  # a slot above workers_per_host
            ]
        }
    )
    reports = roll(fleet, ["job1"]).run()
    assert fleet.events == [
        "job1: list",
        "job1: list",
        "job1: remove worker-1-v1-20260101",
        "job1: stop and remove worker-2-v2-20261126",
    ]
    assert reports[0].result == "already on this release"
    assert fleet.workers("job1") == [(1, "v2", "v2-20261126", "running")]


def test_first_deploy_starts_workers_on_an_empty_host():
    fleet = FakeFleet(workers={"job1": []})
    roll(fleet, ["job1"]).run()
    assert fleet.events[:3] == [
        "job1: list",
        "job1: start worker-1-v2-20261127",
        "job1: wait ready worker-1-v2-20261127",
    ]


def test_interrupt_stops_before_the_next_host():
    fleet = FakeFleet(workers={h: [(1, "v1", "v1-1", "running")] for h in ("job1", "job2")})
    engine = roll(fleet, ["job1", "job2"])
    original = fleet.log

    def interrupt_after_first_host(message):
        original(message)
        if message.startswith("job1:"):
            engine.stop_requested = True

    fleet.log = interrupt_after_first_host
    with pytest.raises(RolloutFailed) as failure:
        engine.run()
    assert failure.value.host == "job2" and not failure.value.touched
    assert "hosts done (on v2): job1" in failure.value.reason


def test_workers_on_a_tag_pushed_again_are_replaced_by_the_new_digest():
    old, new = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    fleet = FakeFleet(workers={"job1": [(1, f"latest@{old}", "latest-20260101", "running")]})
    [report] = roll(fleet, ["job1"], tag="latest", digest=new).run()
    assert report.result == "updated"
    assert [(slot, tag) for slot, tag, _, state in fleet.workers("job1")] == [(1, "latest")]
    [worker] = [c for c in fleet.containers["job1"] if c.role == "worker"]
    assert worker.digest == new
    start = next(c for _, c in fleet.commands if "docker run" in c)
    assert f"registry:5000/deploykit/app@{new}" in start
