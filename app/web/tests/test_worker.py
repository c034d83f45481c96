"""The example job worker (worker.py) and the web app's /jobs endpoints, against
an in-memory Redis: jobs move queue -> processing -> done exactly once, a SIGTERM lets
the job in hand finish, and a predecessor's leftovers are re-queued."""

from __future__ import annotations

import io
import json
import os
import signal

from app_under_test import call, load_module
from fake_redis import FakeRedis

webapp = load_module("webapp.py", "deploykit_example_webapp")
worker = load_module("worker.py", "deploykit_example_worker")


def make_worker(client, worker_id="job1-1", version="v1", sleep=None, lines=None):
    return worker.Worker(
        client,
        worker_id,
        version,
        poll_s=0.01,
        sleep=sleep or (lambda seconds: None),
        log=(lines if lines is not None else []).append,
    )


def stop_when_queue_is_empty(client, w):
    client.on_empty_wait = w.request_stop


def test_jobs_run_in_order_and_are_recorded_once_with_worker_and_version():
    client = FakeRedis()
    ids = [worker.enqueue(client, seconds, job_id=f"job-{n}") for n, seconds in enumerate([1, 2])]
    slept = []
    w = make_worker(client, sleep=slept.append)
    stop_when_queue_is_empty(client, w)
    assert w.run() == 0
    assert slept == [1.0, 2.0]  # first in, first out
    assert client.lrange(worker.FINISHED, 0, -1) == [i.encode() for i in ids]
    assert json.loads(client.hget(worker.DONE, "job-0")) == {"worker": "job1-1", "version": "v1"}
    assert client.hget(worker.STATUS, "job-1") == b"done"
    assert client.llen(worker.QUEUE) == 0
    assert client.llen(worker.processing_list("job1-1")) == 0


def test_the_ready_line_comes_after_connecting_and_recovering():
    client = FakeRedis()
    client.rpush(worker.processing_list("job1-1"), json.dumps({"id": "left", "seconds": 0}))
    lines = []
    w = make_worker(client, lines=lines, version="v2")
    stop_when_queue_is_empty(client, w)
    w.run()
    assert client.pings == 1
    ready = next(i for i, line in enumerate(lines) if line.startswith(worker.READY_LINE))
    requeued = next(i for i, line in enumerate(lines) if "re-queued 1 job(s)" in line)
    assert requeued < ready
    assert lines[ready] == "worker ready: job1-1 version v2"


def test_a_predecessors_job_in_processing_is_requeued_and_done_once():
    client = FakeRedis()
    worker.enqueue(client, 0, job_id="later")
    # A v1 worker of the same slot died while running "cut": its job is still in its list.
    client.rpush(worker.processing_list("job1-1"), json.dumps({"id": "cut", "seconds": 5}))
    w = make_worker(client, version="v2")
    stop_when_queue_is_empty(client, w)
    w.run()
    assert client.lrange(worker.FINISHED, 0, -1) == [b"cut", b"later"]
    assert json.loads(client.hget(worker.DONE, "cut"))["version"] == "v2"
    # Another slot's processing list is that worker's business, not this one's.
    assert w.recover() == 0


def test_sigterm_finishes_the_job_in_hand_then_takes_no_new_one():
    client = FakeRedis()
    for n in range(3):
        worker.enqueue(client, 1, job_id=f"job-{n}")
    w = make_worker(client)
    previous = signal.signal(signal.SIGTERM, w.request_stop)
    finished_sleeps = []

    def sleep_then_receive_sigterm(seconds):
        # `docker stop` arrives in the middle of the first job.
        os.kill(os.getpid(), signal.SIGTERM)
        finished_sleeps.append(seconds)

    w.sleep = sleep_then_receive_sigterm
    try:
        assert w.run() == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert finished_sleeps == [1.0]
    assert client.lrange(worker.FINISHED, 0, -1) == [b"job-0"]
    assert client.hget(worker.STATUS, "job-0") == b"done"
    # The rest wait in the queue for the next worker; nothing is left in processing.
    assert client.llen(worker.QUEUE) == 2
    assert client.llen(worker.processing_list("job1-1")) == 0


def test_a_malformed_job_is_dropped_not_retried_forever():
    client = FakeRedis()
    client.lpush(worker.QUEUE, b"not json")
    client.lpush(worker.QUEUE, json.dumps({"seconds": 1}))  # no id
    lines = []
    w = make_worker(client, lines=lines)
    stop_when_queue_is_empty(client, w)
    w.run()
    assert client.llen(worker.processing_list("job1-1")) == 0
    assert client.llen(worker.FINISHED) == 0
    assert sum("dropping malformed job" in line for line in lines) == 2


def test_job_seconds_are_bounded():
    assert worker.new_job(10**9, "x")["seconds"] == worker.MAX_JOB_SECONDS
    for bad in (-1, float("nan"), "soon"):
        try:
            worker.new_job(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_main_refuses_to_start_without_redis_url(capsys):
    assert worker.main({}) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err


# -- the web app's /jobs endpoints ----------------------------------------------------------


def post(app, path, body: bytes):
    environ_body = {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, **environ_body}
    text = b"".join(app(environ, start_response)).decode()
    return int(captured["status"].split()[0]), text


def test_post_jobs_queues_a_job_and_get_reports_it_until_done():
    client = FakeRedis()
    app = webapp.make_app({"APP_VERSION": "v1"}, redis_client=client, hostname="t")
    code, body = post(app, "/jobs", b'{"seconds": 2}')
    assert code == 201
    job_id = json.loads(body)["id"]
    assert json.loads(client.lrange(worker.QUEUE, 0, -1)[0]) == {"id": job_id, "seconds": 2.0}
    code, _, body = call(app, f"/jobs/{job_id}")
    assert (code, json.loads(body)) == (200, {"id": job_id, "status": "queued"})

    w = make_worker(client, version="v2")
    stop_when_queue_is_empty(client, w)
    w.run()
    code, _, body = call(app, f"/jobs/{job_id}")
    assert json.loads(body) == {"id": job_id, "status": "done", "worker": "job1-1", "version": "v2"}


def test_jobs_endpoints_refuse_bad_requests():
    app = webapp.make_app({}, redis_client=FakeRedis(), hostname="t")
    assert call(app, "/jobs/nope")[0] == 404
    code, headers, _ = call(app, "/jobs")
    assert (code, headers["Allow"]) == (405, "POST")
    assert post(app, "/jobs", b'{"seconds": -3}')[0] == 400
    assert post(app, "/jobs", b"[1]")[0] == 400


def test_jobs_endpoints_answer_503_without_redis_url():
    app = webapp.make_app({}, hostname="t")
    assert call(app, "/jobs/x")[0] == 503
    # The rest of the app does not need Redis.
    assert call(app, "/up")[0] == 200
