"""The example app's job worker: takes jobs from a Redis list, reliably (stdlib + redis).

Same image as the web app, another command: ``python3 /app/worker.py``.

A job is JSON ``{"id": "...", "seconds": 1.5}``: the worker sleeps that long (the
stand-in for real work), then records who did it. Reliable queue pattern:

1. BLMOVE moves a job from ``deploykit:jobs`` to this worker's own processing list
   (``deploykit:processing:<WORKER_ID>``) in one step: a job is always in exactly one
   list, never only in a dead worker's memory.
2. The job runs.
3. One transaction records the result (``deploykit:done`` hash: id -> worker and
   version, ``deploykit:status``: id -> done, ``deploykit:finished`` list: one entry
   per completion) and removes the job from the processing list.

On start, jobs left in its own processing list by a predecessor that died mid-job go
back to the queue (at-least-once: a job cut short runs again). On SIGTERM (``docker
stop``) it takes no new job, finishes the one in hand and exits 0; ``docker stop
--time`` must leave it long enough for the longest job.

Configuration comes only from environment variables:

+ REDIS_URL: ``redis://:PASSWORD@HOST:6379/0`` (required)
+ WORKER_ID: names the processing list; stable per worker slot so a replacement
  recovers its predecessor's jobs (defaults to the container's hostname)
+ APP_VERSION: the deployed tag, recorded with each finished job
+ WORKER_POLL_S (1): longest wait for a job before checking for SIGTERM again
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import uuid
from typing import Callable, Mapping

QUEUE = "deploykit:jobs"
DONE = "deploykit:done"
STATUS = "deploykit:status"
FINISHED = "deploykit:finished"
PROCESSING_PREFIX = "deploykit:processing:"
# Printed once the worker is connected and has recovered its predecessor's jobs: the
# deploy waits for this line before it calls the new worker up.
READY_LINE = "worker ready"
# Longest sleep a job may ask for, so a typo cannot pin a worker for hours.
MAX_JOB_SECONDS = 3600.0


def processing_list(worker_id: str) -> str:
    return PROCESSING_PREFIX + worker_id


def new_job(seconds: float, job_id: str | None = None) -> dict:
    """A job as the queue holds it; `seconds` is bounded to [0, MAX_JOB_SECONDS]."""
    seconds = float(seconds)
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"seconds must be a non-negative number, got {seconds!r}")
    return {"id": job_id or uuid.uuid4().hex, "seconds": min(seconds, MAX_JOB_SECONDS)}


def enqueue(client, seconds: float, job_id: str | None = None) -> str:
    """Queue a job (used by the web app's POST /jobs); returns its id."""
    job = new_job(seconds, job_id)
    pipe = client.pipeline(transaction=True)
    pipe.hset(STATUS, job["id"], "queued")
    pipe.lpush(QUEUE, json.dumps(job, sort_keys=True))
    pipe.execute()
    return job["id"]


def job_status(client, job_id: str) -> dict | None:
    """{"id", "status", and for a done job "worker", "version"}; None if unknown."""
    status = client.hget(STATUS, job_id)
    if status is None:
        return None
    result = {"id": job_id, "status": _text(status)}
    done = client.hget(DONE, job_id)
    if done is not None:
        result.update(json.loads(_text(done)))
    return result


class Worker:
    def __init__(
        self,
        client,
        worker_id: str,
        version: str,
        *,
        poll_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda line: print(line, flush=True),
    ):
        self.client = client
        self.worker_id = worker_id
        self.version = version
        self.poll_s = poll_s
        self.sleep = sleep
        self.log = log
        self.processing = processing_list(worker_id)
        self.stopping = False

    def request_stop(self, *_signal_args) -> None:
        """Signal handler: no new job; the one in hand finishes."""
        if not self.stopping:
            self.log(f"worker {self.worker_id}: stop requested, finishing the job in hand")
        self.stopping = True

    def recover(self) -> int:
        """Put back on the queue what a predecessor left in this worker's processing list."""
        count = 0
        while self.client.lmove(self.processing, QUEUE, "RIGHT", "RIGHT") is not None:
            count += 1
        if count:
            self.log(f"worker {self.worker_id}: re-queued {count} job(s) left by a predecessor")
        return count

    def take(self) -> bytes | str | None:
        # Waits at most poll_s, so a stop request is seen within that time. The queue
        # is LPUSHed: taking from the right is first in, first out.
        return self.client.blmove(QUEUE, self.processing, self.poll_s, "RIGHT", "LEFT")

    def process(self, raw: bytes | str) -> str | None:
        """Run one job and record it; returns its id (None for a malformed job)."""
        try:
            job = json.loads(_text(raw))
            job_id = str(job["id"])
            seconds = new_job(job.get("seconds", 0), job_id)["seconds"]
        except (ValueError, KeyError, TypeError) as error:
            # Dropped, not retried forever: a malformed job can never succeed.
            self.log(f"worker {self.worker_id}: dropping malformed job {raw!r}: {error}")
            self.client.lrem(self.processing, 1, raw)
            return None
        self.client.hset(STATUS, job_id, "running")
        self.log(f"worker {self.worker_id}: job {job_id} started ({seconds:g}s)")
        self.sleep(seconds)
        record = json.dumps({"worker": self.worker_id, "version": self.version}, sort_keys=True)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(DONE, job_id, record)
        pipe.hset(STATUS, job_id, "done")
        pipe.rpush(FINISHED, job_id)
        pipe.lrem(self.processing, 1, raw)
        pipe.execute()
        self.log(f"worker {self.worker_id}: job {job_id} done")
        return job_id

    def run(self) -> int:
        self.client.ping()
        self.recover()
        self.log(f"{READY_LINE}: {self.worker_id} version {self.version}")
        while not self.stopping:
            raw = self.take()
            if raw is not None:
                self.process(raw)
        self.log(f"worker {self.worker_id}: stopped")
        return 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def connect(url: str):
    """A client for REDIS_URL; imported here so the web app and tests need no redis
    module until they talk to Redis."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)


def main(environ: Mapping[str, str] = os.environ) -> int:
    url = environ.get("REDIS_URL", "").strip()
    if not url:
        print("worker: REDIS_URL is not set", file=sys.stderr)
        return 2
    worker = Worker(
        connect(url),
        environ.get("WORKER_ID", "").strip() or socket.gethostname(),
        environ.get("APP_VERSION", "").strip() or "dev",
        poll_s=float(environ.get("WORKER_POLL_S", "1") or 1),
    )
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    try:
        return worker.run()
    except Exception as error:  # connection refused, NOAUTH...: say why, exit non-zero
        print(f"worker {worker.worker_id}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
