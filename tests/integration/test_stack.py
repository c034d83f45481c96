"""The whole stack through the front door: a request to HAProxy reaches the app on a
web host, which reaches PostgreSQL (over TLS) and Redis on db1, and a job it queues is
done by a worker on job1. Every address and password the app uses came from its env
file (group_data interpolation plus the secrets file), nothing else."""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest

from .sandbox_world import lb_urls, pyinfra, wait_for


def call(url: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    # The sandbox's certificate is self-signed: this test is about the app, not TLS.
    context = ssl._create_unverified_context()
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def stack(on_v1):
    """Workers on job1 for the web hosts' tag, unless some already run there."""
    code, running = on_v1.sh("job1", "docker ps -q --filter label=io.deploykit.role=worker")
    if code != 0 or not running.strip():
        run = pyinfra(
            "inventories/sandbox.py",
            "deploys/jobs.py",
            "--data",
            f"image_tag={on_v1.running_tag('web1')}",
        )
        assert run.returncode == 0, run.failure_excerpt()
    return on_v1


@pytest.mark.parametrize("front", [0, 1], ids=["http", "https"])
def test_the_app_reads_postgresql_over_tls_through_haproxy(stack, front):
    status, body = call(f"{lb_urls()[front]}db")
    assert status == 200, body
    _, majors = stack.sh("db1", "ls /etc/postgresql")
    assert body["server_version"].startswith(f"PostgreSQL {majors.split()[-1]}."), body
    assert body["ssl"] is True


def test_a_job_queued_through_haproxy_is_done_by_a_worker(stack):
    status, queued = call(f"{lb_urls()[0]}jobs", {"seconds": 0.2})
    assert status == 201 and queued["status"] == "queued", queued

    def done():
        return call(f"{lb_urls()[0]}jobs/{queued['id']}")[1].get("status") == "done"

    wait_for(done, timeout=60, interval=0.5, what="the job to be done by a worker")
    _, result = call(f"{lb_urls()[0]}jobs/{queued['id']}")
    assert result["worker"].startswith("job1-"), result
