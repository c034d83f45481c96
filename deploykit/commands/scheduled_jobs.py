"""Scheduled jobs: a systemd timer per job, whose service runs a one-off container of the
app image (the tag the host runs, read when the run starts). Pure: the scripts and
commands as text, no I/O.

- One run at a time: the run script takes a lock (flock on a file in /run/lock) that
  `docker run` itself holds until it exits; a run that finds it taken is skipped.
- The time limit is coreutils' `timeout` around `docker run`: SIGTERM (proxied to the
  container, where tini hands it to the job), SIGKILL after a grace period; exit status
  124. The finish script (ExecStopPost) removes the container if a killed `docker run`
  left it behind. systemd's own timeouts are only a safety net above these.
- The finish script keeps how the last run ended in STATE_DIR/JOB.last, one line of
  key=value words that `parse_job_status` reads back.
"""

from __future__ import annotations

from .containers import LABEL_PREFIX
from .oneoff import RunningTagImage, resolve_running_tag, run_throwaway
from .shell import q

COMPONENT = "deploykit/components/scheduled_jobs.py"
UNIT_PREFIX = "deploykit-job-"
SYSTEMD_DIR = "/etc/systemd/system"
SCRIPT_DIR = "/usr/local/lib/deploykit"
# The job's containers carry its name in this label.
SCHEDULED_LABEL = f"{LABEL_PREFIX}.scheduled"
# Exit status of a run skipped because the previous one still holds the lock.
SKIPPED = 75
# Exit status of `timeout` when the run reached its time limit.
TIMED_OUT = 124
# What systemd allows beyond the time limit and its grace (container start and removal,
# the finish script) before it steps in: slow Docker on a busy host is not a failure.
SYSTEMD_MARGIN_S = 120


def unit_name(job: str) -> str:
    """The systemd name (without .service / .timer) and container name of a job."""
    return f"{UNIT_PREFIX}{job}"


def lock_file(job: str) -> str:
    return f"/run/lock/{unit_name(job)}.lock"


def run_script_path(job: str) -> str:
    return f"{SCRIPT_DIR}/{unit_name(job)}-run"


def finish_script_path(job: str) -> str:
    return f"{SCRIPT_DIR}/{unit_name(job)}-finished"


def run_script(
    job: str,
    image_repository: str,
    command: list[str],
    *,
    network: str,
    env_file: str,
    state_dir: str,
    time_limit_s: int,
    stop_timeout_s: int,
) -> str:
    """The service's ExecStart: lock, find the tag, note it, then run the container
    under its time limit."""
    container = unit_name(job)
    run_file = q(f"{state_dir}/{job}.run")
    skipped = f"deploykit: scheduled job {job}: the previous run still holds the lock; skipped"
    missing = f"deploykit: scheduled job {job}: no app or worker container runs here, no tag"
    run = run_throwaway(
        RunningTagImage(image_repository),
        command,
        network=network,
        env_file=env_file,
        purpose="scheduled",
        # Its output reaches the journal (and so central logging) through `docker run`
        # alone: no json log of a container removed as soon as it exits.
        flags=[
            f"--name {q(container)}",
            # tini as PID 1: the job's own process gets the SIGTERM of its time limit.
            "--init",
            f"--label {q(f'{SCHEDULED_LABEL}={job}')}",
            "--log-driver none",
        ],
    )
    return "\n".join(
        [
            "#!/bin/sh",
            f"# Managed by deploykit: scheduled job {job} ({COMPONENT}).",
            "# The lock's descriptor passes to docker run, which holds it until the job ends.",
            "# Opened for reading: a lock file someone else created (root) serves as well.",
            f"lock={q(lock_file(job))}",
            '[ -e "$lock" ] || : > "$lock"',
            'exec 9< "$lock"',
            f"flock --nonblock 9 || {{ echo {q(skipped)} >&2; exit {SKIPPED}; }}",
            "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)",
            f"printf 'started=%s tag=-\\n' \"$started\" > {run_file}",
            resolve_running_tag(missing).rstrip("; "),
            f'printf \'started=%s tag=%s\\n\' "$started" "$tag" > {run_file}',
            f'echo "deploykit: scheduled job {job} runs with tag $tag"',
            f"exec timeout --kill-after={int(stop_timeout_s)}s {int(time_limit_s)}s {run}",
            "",
        ]
    )


def finish_script(job: str, *, state_dir: str) -> str:
    """The service's ExecStopPost, after every run however it ended: systemd sets
    SERVICE_RESULT (success, exit-code, timeout, signal...), EXIT_CODE and EXIT_STATUS."""
    container = unit_name(job)
    run_file = q(f"{state_dir}/{job}.run")
    last_file = q(f"{state_dir}/{job}.last")
    return "\n".join(
        [
            "#!/bin/sh",
            f"# Managed by deploykit: scheduled job {job} ({COMPONENT}).",
            f'if [ "${{EXIT_STATUS:-}}" = {SKIPPED} ]; then',
            "    # Skipped: the run holding the lock is not ours to stop or to report.",
            "    exit 0",
            "fi",
            "# A `docker run` stopped at the time limit can leave its container running.",
            f"docker rm --force {q(container)} >/dev/null 2>&1 || true",
            f"run=$(cat {run_file} 2>/dev/null || echo 'started=- tag=-')",
            'result="${SERVICE_RESULT:-unknown}"',
            f'[ "${{EXIT_STATUS:-}}" != {TIMED_OUT} ] || result=timeout',
            "printf '%s finished=%s result=%s exit_code=%s exit_status=%s\\n' \"$run\""
            ' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$result"'
            ' "${EXIT_CODE:--}" "${EXIT_STATUS:--}"'
            f" > {last_file}.new && mv {last_file}.new {last_file}",
            "",
        ]
    )


def list_installed() -> str:
    """The names of the jobs whose timers are installed on the host, one per line."""
    return (
        f"for timer in {SYSTEMD_DIR}/{UNIT_PREFIX}*.timer; do "
        '[ -e "$timer" ] || continue; '
        f'name=${{timer##*/{UNIT_PREFIX}}}; echo "${{name%.timer}}"; done; true'
    )


def status_script(state_dir: str) -> str:
    """Per installed job: `job=NAME`, its schedule, systemd's view of the timer and the
    service, and the last run's line (`last ...`), for `parse_job_status`."""
    return (
        f"for timer in {SYSTEMD_DIR}/{UNIT_PREFIX}*.timer; do "
        '[ -e "$timer" ] || continue; '
        f"unit=${{timer##*/}}; unit=${{unit%.timer}}; job=${{unit#{UNIT_PREFIX}}}; "
        'echo "job=$job"; '
        "sed -n 's/^OnCalendar=/schedule=/p' \"$timer\"; "
        'systemctl show "$unit.timer" --timestamp=utc -p NextElapseUSecRealtime; '
        'systemctl show "$unit.service" -p ActiveState; '
        f'last=$(cat {q(state_dir)}/"$job".last 2>/dev/null) && echo "last $last"; '
        # A job never run has no result: not a failure of the script.
        "done; true"
    )


def parse_job_status(output: str) -> list[dict[str, str]]:
    """The jobs `status_script` printed, each a dict: job, schedule, next (a UTC time or
    ""), active (systemd's ActiveState) and, after a first run: started, tag, finished,
    result, exit_code, exit_status."""
    jobs: list[dict[str, str]] = []
    for line in output.splitlines():
        if line.startswith("job="):
            jobs.append({"job": line[4:]})
        elif not jobs:
            continue
        elif line.startswith("schedule="):
            jobs[-1]["schedule"] = line[len("schedule=") :]
        elif line.startswith("NextElapseUSecRealtime="):
            jobs[-1]["next"] = line.split("=", 1)[1]
        elif line.startswith("ActiveState="):
            jobs[-1]["active"] = line.split("=", 1)[1]
        elif line.startswith("last "):
            for word in line[5:].split():
                key, _, value = word.partition("=")
                jobs[-1][key] = value
    return jobs
