"""Scheduled jobs on job1: systemd timers running one-off containers of the tag job1's
workers run, declared in a group_data folder of the module's own.

A job writing a row to PostgreSQL runs on its (short) schedule; a job slower than its
period never overlaps itself; a run finding the lock taken is skipped; a failing job and
one stopped at its time limit show as failed in the status deploy; a job's output
reaches the log host; after a workers' roll the next run uses the new tag; a job removed
from group_data loses its timer."""

from __future__ import annotations

import datetime
import uuid

import pytest

from .sandbox_world import copy_sandbox_inventory, pyinfra, wait_for

MARKER = f"scheduled-{uuid.uuid4().hex[:10]}"
# Run by their timers, every few seconds.
TIMED = {
    "pg-row": {"schedule": "*:*:0/5", "command": "python3 /app/manage.py record-run pg-row"},
    # Five seconds of work every two seconds: it would overlap itself if it could.
    "slow": {"schedule": "*:*:0/2", "command": "python3 /app/manage.py record-run slow 5"},
}
# Started by hand (systemctl start) in the tests; their timers would wait for 04:00.
BY_HAND = {
    "failing": {
        "schedule": "*-*-* 04:00:00",
        "command": ["sh", "-c", f"echo {MARKER}-$APP_VERSION; exit 3"],
    },
    "too-long": {"schedule": "*-*-* 04:00:00", "command": "sleep 600", "time_limit_s": 3},
    "locked": {"schedule": "*-*-* 04:00:00", "command": "python3 /app/manage.py record-run locked"},
}
STATE_DIR = "/var/lib/deploykit/scheduled"
REMOTE_LOGS = "/var/log/deploykit/remote"


def declare(inventory, jobs: dict) -> None:
    (inventory.parent / "group_data" / "job.py").write_text(
        f"scheduled_jobs = {jobs!r}\n# A run stopped at its time limit is killed 2 s later.\n"
        "scheduled_jobs_stop_timeout_s = 2\n"
    )


def provision_job1(inventory):
    run = pyinfra(str(inventory), "deploys/provision.py", "--limit", "job1")
    assert run.returncode == 0, run.failure_excerpt()
    return run


def worker_tag(fleet) -> str | None:
    code, output = fleet.sh(
        "job1",
        "docker ps --filter label=io.deploykit.role=worker "
        "--format '{{.Label \"io.deploykit.tag\"}}' | sort -u",
    )
    assert code == 0, output
    return output.strip() or None


def roll_workers(tag: str):
    run = pyinfra("inventories/sandbox.py", "deploys/jobs.py", "--data", f"image_tag={tag}")
    assert run.returncode == 0, run.failure_excerpt()


def sql(fleet, query: str) -> list[list[str]]:
    """Rows of `query` on db1's app database, read as postgres over the local socket."""
    code, output = fleet.sh(
        "db1", f"runuser -u postgres -- psql -d app -X -A -t -F '|' -c \"{query}\""
    )
    assert code == 0, output
    return [line.split("|") for line in output.splitlines() if line.strip()]


def runs_of(fleet, job: str) -> list[list[str]]:
    """(started, finished, app version) of each recorded run, oldest first; none before
    the table exists (the first run creates it)."""
    if not sql(fleet, "SELECT to_regclass('deploykit_job_runs') IS NOT NULL")[0][0] == "t":
        return []
    return sql(
        fleet,
        "SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at), app_version "
        f"FROM deploykit_job_runs WHERE job = '{job}' ORDER BY started_at",
    )


def last_result(fleet, job: str, missing_ok: bool = False) -> dict[str, str]:
    code, output = fleet.sh("job1", f"cat {STATE_DIR}/{job}.last")
    if missing_ok and code != 0:
        return {}
    assert code == 0, output
    return dict(word.split("=", 1) for word in output.split())


def installed_units(fleet) -> set[str]:
    _, output = fleet.sh("job1", "ls /etc/systemd/system/ | grep '^deploykit-job-' || true")
    return set(output.split())


@pytest.fixture(scope="module")
def jobs_inventory(tmp_path_factory, on_v1):
    fleet = on_v1
    if worker_tag(fleet) is None:
        roll_workers("v1")
    folder = tmp_path_factory.mktemp("scheduled")
    (folder / "group_data").mkdir()
    inventory = copy_sandbox_inventory(folder)
    declare(inventory, {**TIMED, **BY_HAND})
    provision_job1(inventory)
    yield inventory
    # Whatever happened: no job of this module stays scheduled on job1.
    declare(inventory, {})
    provision_job1(inventory)


def test_each_job_has_an_active_timer_on_the_first_job_host(jobs_inventory, fleet):
    code, output = fleet.sh(
        "job1",
        "systemctl is-active " + " ".join(f"deploykit-job-{j}.timer" for j in {**TIMED, **BY_HAND}),
    )
    assert code == 0, output
    # Not on any other host.
    for web in fleet.hosts("web"):
        assert fleet.sh(web, "ls /etc/systemd/system/deploykit-job-* 2>/dev/null")[0] != 0


def test_a_job_writing_to_postgresql_runs_on_its_schedule(jobs_inventory, fleet):
    before = len(runs_of(fleet, "pg-row"))
    rows = wait_for(
        lambda: len(runs_of(fleet, "pg-row")) >= before + 2 and runs_of(fleet, "pg-row"),
        timeout=240,
        interval=1,
        what="two runs of pg-row",
    )
    assert rows[-1][2] == worker_tag(fleet)
    # The finish script records each run once its container is gone.
    wait_for(
        lambda: last_result(fleet, "pg-row", missing_ok=True).get("result") == "success",
        timeout=120,
        interval=1,
        what="pg-row's last run recorded as a success",
    )


def test_a_job_slower_than_its_period_never_overlaps_itself(jobs_inventory, fleet):
    rows = wait_for(
        lambda: len(runs_of(fleet, "slow")) >= 3 and runs_of(fleet, "slow"),
        timeout=300,
        interval=1,
        what="three runs of slow",
    )
    spans = [(float(started), float(finished)) for started, finished, _ in rows]
    for (_, previous_end), (start, end) in zip(spans, spans[1:]):
        assert start >= previous_end, f"runs overlap: {spans}"
        assert end - start >= 5


def test_a_run_that_finds_the_lock_taken_is_skipped(jobs_inventory, fleet):
    """The lock itself, held from outside: the run does nothing and is no failure."""
    code, output = fleet.sh(
        "job1",
        "flock /run/lock/deploykit-job-locked.lock systemctl start deploykit-job-locked.service"
        " && journalctl -u deploykit-job-locked.service --no-pager -n 5",
    )
    assert code == 0, output
    assert "the previous run still holds the lock; skipped" in output
    assert runs_of(fleet, "locked") == []
    assert fleet.sh("job1", f"test -e {STATE_DIR}/locked.last")[0] != 0


def test_a_failing_job_shows_as_failed_in_status_and_its_output_reaches_the_log_host(
    jobs_inventory, fleet
):
    code, output = fleet.sh("job1", "systemctl start deploykit-job-failing.service")
    assert code != 0, output
    result = wait_for(
        lambda: last_result(fleet, "failing", missing_ok=True), interval=1, what="its result"
    )
    assert (result["result"], result["exit_status"]) == ("exit-code", "3")
    status = pyinfra("inventories/sandbox.py", "deploys/status.py")
    assert status.returncode == 0, status.failure_excerpt()
    rows = [line for line in status.output.splitlines() if line.startswith(("!!", "  "))]
    line = next(row for row in rows if row[2:].startswith("failing "))
    assert line.startswith("!!failing") and "FAILED: exit status 3" in line, line
    assert "!! scheduled jobs whose last run FAILED: failing (job1)" in status.output
    pg_row = next(row for row in rows if row[2:].startswith("pg-row "))
    assert "*:*:0/5" in pg_row and "succeeded" in pg_row, pg_row
    assert line.endswith("04:00:00 UTC"), line  # the failing job's next run
    # Its output went to the journal, and from there to the log host.
    wait_for(
        lambda: fleet.sh(
            "db1",
            f"grep -q {MARKER}-{worker_tag(fleet)} {REMOTE_LOGS}/job1/deploykit-job-failing.log",
        )[0]
        == 0,
        timeout=60,
        interval=1,
        what="the failing job's output on the log host",
    )


def test_a_job_past_its_time_limit_is_stopped_and_its_container_removed(jobs_inventory, fleet):
    started = datetime.datetime.now()
    code, output = fleet.sh("job1", "systemctl start deploykit-job-too-long.service")
    assert code != 0, output
    # Stopped at 3 s (SIGTERM through tini, SIGKILL 2 s later at worst); the container goes.
    assert datetime.datetime.now() - started < datetime.timedelta(seconds=120)
    result = wait_for(
        lambda: last_result(fleet, "too-long", missing_ok=True), interval=1, what="its result"
    )
    assert (result["result"], result["exit_status"]) == ("timeout", "124")
    status = pyinfra("inventories/sandbox.py", "deploys/status.py")
    line = next(line for line in status.output.splitlines() if line.startswith("!!too-long"))
    assert line.startswith("!!too-long") and "FAILED: stopped at its time limit" in line, line
    code, output = fleet.sh("job1", "docker ps --all --quiet --filter name=deploykit-job-too-long")
    assert (code, output.strip()) == (0, "")


def test_after_a_workers_roll_the_next_run_uses_the_new_tag(jobs_inventory, fleet):
    old = worker_tag(fleet)
    new = "v2" if old == "v1" else "v1"
    try:
        roll_workers(new)
        rolled = sql(fleet, "SELECT extract(epoch FROM now())")[0][0]
        rows = wait_for(
            lambda: [r for r in runs_of(fleet, "pg-row") if float(r[0]) > float(rolled)],
            timeout=240,
            interval=1,
            what="a run of pg-row after the roll",
        )
        assert {row[2] for row in rows} == {new}
        wait_for(
            lambda: last_result(fleet, "pg-row", missing_ok=True).get("tag") == new,
            timeout=120,
            interval=1,
            what=f"pg-row's last run recorded with {new}",
        )
    finally:
        roll_workers(old)


def test_a_job_removed_from_group_data_loses_its_timer(jobs_inventory, fleet):
    declare(jobs_inventory, TIMED)
    provision_job1(jobs_inventory)
    units = installed_units(fleet)
    assert units == {f"deploykit-job-{j}.{kind}" for j in TIMED for kind in ("service", "timer")}
    for job in BY_HAND:
        assert fleet.sh("job1", f"systemctl is-active deploykit-job-{job}.timer")[0] != 0
        assert fleet.sh("job1", f"test -e /usr/local/lib/deploykit/deploykit-job-{job}-run")[0]
    # A second run changes nothing.
    again = provision_job1(jobs_inventory)
    assert again.grand_total()["changed"] == 0, again.changed_operations()
