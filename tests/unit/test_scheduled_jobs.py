"""Scheduled jobs: the run and finish scripts by exact text, the status parsing and
rendering, and the checks of a declaration."""

from __future__ import annotations

from deploykit.commands.scheduled_jobs import (
    finish_script,
    parse_job_status,
    run_script,
    status_script,
)
from deploykit.components.scheduled_jobs import job_problems
from deploykit.status import job_rows, render_scheduled_jobs

STATE = "/var/lib/deploykit/scheduled"


def test_the_run_script_locks_finds_the_tag_then_becomes_docker_run():
    script = run_script(
        "pg-row",
        "registry:5000/deploykit/app",
        ["python3", "/app/manage.py", "record-run", "pg row"],
        network="deploykit-app",
        env_file="/etc/deploykit/app.env",
        state_dir=STATE,
        time_limit_s=600,
        stop_timeout_s=10,
    ).splitlines()
    assert script[0] == "#!/bin/sh"
    assert script[4:8] == [
        "lock=/run/lock/deploykit-job-pg-row.lock",
        '[ -e "$lock" ] || : > "$lock"',
        'exec 9< "$lock"',
        "flock --nonblock 9 || { echo 'deploykit: scheduled job pg-row: the previous run still "
        "holds the lock; skipped' >&2; exit 75; }",
    ]
    # The version the host runs when the run starts: its app's, else its workers'; the
    # image by its digest when pinned.
    assert script[10].startswith(
        "version=$(docker ps --filter label=io.deploykit.role=app --format "
        '\'{{.Label "io.deploykit.tag"}}@{{.Label "io.deploykit.digest"}}\' 2>/dev/null'
        " | sed -e 's/@$//' 2>/dev/null | tail -n 1); "
    )
    assert "no app or worker container runs here, no tag' >&2; exit 1; fi; " in script[10]
    assert script[10].endswith(
        'tag=${version%%@*}; case $version in *@*) reference="@${version#*@}" ;;'
        ' *) reference=":$tag" ;; esac'
    )
    assert script[8:12:3] == [
        "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)",
        'printf \'started=%s tag=%s\\n\' "$started" "$tag"'
        " > /var/lib/deploykit/scheduled/pg-row.run",
    ]
    assert script[13] == (
        "exec timeout --kill-after=10s 600s "
        "docker run --rm --name deploykit-job-pg-row --init "
        "--label io.deploykit.scheduled=pg-row --log-driver none "
        "--env-file /etc/deploykit/app.env --network deploykit-app "
        '--label io.deploykit.oneoff=scheduled registry:5000/deploykit/app"$reference" '
        "python3 /app/manage.py record-run 'pg row'"
    )


def test_the_finish_script_removes_a_leftover_container_and_keeps_the_result():
    script = finish_script("pg-row", state_dir=STATE).splitlines()
    assert script[2:6] == [
        'if [ "${EXIT_STATUS:-}" = 75 ]; then',
        "    # Skipped: the run holding the lock is not ours to stop or to report.",
        "    exit 0",
        "fi",
    ]
    assert "docker rm --force deploykit-job-pg-row >/dev/null 2>&1 || true" in script
    # `timeout`'s status is a run stopped at its time limit.
    assert script[-3:-1] == [
        'result="${SERVICE_RESULT:-unknown}"',
        '[ "${EXIT_STATUS:-}" != 124 ] || result=timeout',
    ]
    assert script[-1] == (
        "printf '%s finished=%s result=%s exit_code=%s exit_status=%s\\n' \"$run\" "
        '"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$result" "${EXIT_CODE:--}" '
        '"${EXIT_STATUS:--}" > /var/lib/deploykit/scheduled/pg-row.last.new && '
        "mv /var/lib/deploykit/scheduled/pg-row.last.new /var/lib/deploykit/scheduled/pg-row.last"
    )


def test_the_status_script_reads_the_state_dir_given_and_succeeds_without_results():
    script = status_script("/var/lib/x")
    assert 'cat /var/lib/x/"$job".last' in script
    # pyinfra drops the output of a fact command that fails: a job never run is no failure.
    assert script.endswith("done; true")


STATUS_OUTPUT = """\
job=failing
schedule=*:*:0/5
NextElapseUSecRealtime=Fri 2026-11-27 00:21:50 UTC
ActiveState=inactive
last started=2026-11-27T00:21:45Z tag=v1 finished=2026-11-27T00:21:46Z result=exit-code \
exit_code=exited exit_status=3
job=new
schedule=daily
NextElapseUSecRealtime=
ActiveState=inactive
job=pg-row
schedule=*:*:0/5
NextElapseUSecRealtime=Fri 2026-11-27 00:21:50 UTC
ActiveState=activating
last started=2026-11-27T00:21:40Z tag=v2 finished=2026-11-27T00:21:41Z result=success \
exit_code=exited exit_status=0
"""


def test_status_output_is_parsed_per_job():
    jobs = parse_job_status(STATUS_OUTPUT)
    assert [job["job"] for job in jobs] == ["failing", "new", "pg-row"]
    assert jobs[0] == {
        "job": "failing",
        "schedule": "*:*:0/5",
        "next": "Fri 2026-11-27 00:21:50 UTC",
        "active": "inactive",
        "started": "2026-11-27T00:21:45Z",
        "tag": "v1",
        "finished": "2026-11-27T00:21:46Z",
        "result": "exit-code",
        "exit_code": "exited",
        "exit_status": "3",
    }
    assert jobs[1] == {"job": "new", "schedule": "daily", "next": "", "active": "inactive"}


def test_each_job_shows_schedule_last_run_result_and_next_run_and_failures_stand_out():
    rows = job_rows("job1", parse_job_status(STATUS_OUTPUT))
    assert rows == [
        "!!failing          job1       *:*:0/5            2026-11-27T00:21:45Z v1   "
        "FAILED: exit status 3                2026-11-27 00:21:50 UTC",
        "  new              job1       daily              -                         "
        "never run                            -",
        "  pg-row           job1       *:*:0/5            2026-11-27T00:21:40Z v2   "
        "succeeded (running now)              2026-11-27 00:21:50 UTC",
    ]
    lines = render_scheduled_jobs(rows)
    assert lines[0] == "scheduled jobs:"
    assert lines[-1] == "!! scheduled jobs whose last run FAILED: failing (job1)"


def test_a_run_stopped_at_its_time_limit_or_killed_is_a_failure():
    timeout = {"job": "slow", "result": "timeout", "exit_code": "killed", "exit_status": "TERM"}
    killed = {"job": "slow", "result": "exit-code", "exit_code": "exited", "exit_status": "137"}
    signal = {"job": "slow", "result": "signal", "exit_code": "killed", "exit_status": "KILL"}
    assert "FAILED: stopped at its time limit" in job_rows("job1", [timeout])[0]
    assert "FAILED: killed (SIGKILL)" in job_rows("job1", [killed])[0]
    assert "FAILED: killed by SIGKILL" in job_rows("job1", [signal])[0]


def groups(name):
    return {"job": ["job1", "job2"], "web": ["web1"]}.get(name)


def test_a_good_declaration_has_no_problem():
    spec = {"schedule": "*-*-* 03:00:00", "command": "python3 /app/manage.py sweep"}
    assert job_problems("nightly", spec, groups) == []
    spec = {"schedule": "*:0/15", "command": ["sh", "-c", "x"], "group": "web", "host": "web1"}
    assert job_problems("sweep", {**spec, "time_limit_s": 60}, groups) == []


def test_bad_declarations_are_named():
    assert job_problems("Bad_Name", {}, groups) == [
        "scheduled job 'Bad_Name': a name is lowercase letters, digits and '-' (at most 41)"
    ]
    problems = job_problems(
        "sweep",
        {
            "schedule": "daily'; rm -rf /",
            "command": "",
            "time_limit": 5,
            "time_limit_s": 0,
            "group": "job",
            "host": "web1",
        },
        groups,
    )
    assert problems == [
        "scheduled job 'sweep': unknown key 'time_limit' (did you mean 'time_limit_s'?)",
        "scheduled job 'sweep': schedule must be a systemd calendar expression such as "
        "'*-*-* 03:00:00' or '*:0/15', got \"daily'; rm -rf /\"",
        "scheduled job 'sweep': no command",
        "scheduled job 'sweep': time_limit_s must be a whole number of seconds, got 0",
        "scheduled job 'sweep': host 'web1' is not in group 'job' (job1, job2)",
    ]
    assert job_problems("x", {"schedule": "daily", "command": "true", "group": "db"}, groups) == [
        "scheduled job 'x': group 'db' has no hosts in this inventory"
    ]
    assert job_problems("x", {"schedule": "daily", "command": "sh -c 'x"}, groups) == [
        "scheduled job 'x': command: cannot split \"sh -c 'x\" into words: No closing quotation"
    ]
