"""Job hosts: what a job host needs before its workers can be rolled (the app's env
file, network and image, as on web hosts), and the knobs of the workers' roll
(deploykit/rollout/workers.py)."""

from __future__ import annotations

from pyinfra.api import deploy

from .app import app_host

DEFAULTS = {
    # Worker containers per job host; each takes one job at a time.
    "jobs_workers_per_host": 1,
    # Seconds a stopping worker gets to finish the job in hand (SIGTERM, then SIGKILL):
    # keep it above the longest job, or that job is cut short and runs again.
    "jobs_stop_timeout_s": 60,
    # Longest wait for a new worker to log its ready line (it is then taking jobs).
    "jobs_ready_timeout_s": 30.0,
    # The worker's command in the app image, and the line it logs once it takes jobs.
    "jobs_command": ["python3", "/app/worker.py"],
    "jobs_ready_line": "worker ready",
}


@deploy("Job worker host", data_defaults=DEFAULTS)
def job_host(image: str) -> None:
    app_host(images=[image])
