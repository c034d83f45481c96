"""Redis on the db host, and the job workers on job1 rolled from one release to the
next while they work: every job is done exactly once, the job in hand when the roll
reaches its worker is finished by that (old) worker, and nothing is left in a queue."""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import pytest

from .sandbox_world import pyinfra, wait_for

# The app tags the workers roll between: `make images` builds v1 and v2 (the on_v1
# fixture). While developing this module against a shared sandbox, tags of your own
# (DEPLOYKIT_JOBS_TEST_TAGS=me-v1,me-v2, built with `make -C app build-app push-app`)
# leave v1/v2 and the web hosts alone.
OLD_TAG, NEW_TAG = os.environ.get("DEPLOYKIT_JOBS_TEST_TAGS", "v1,v2").split(",")
WORKERS = 2
LONG_JOB_S = 20
QUEUE, DONE, STATUS, FINISHED = (
    "deploykit:jobs",
    "deploykit:done",
    "deploykit:status",
    "deploykit:finished",
)


@pytest.fixture(scope="module")
def jobs_world(fleet, request):
    """db1 and job1 provisioned: Redis on db1, and job1's env file with REDIS_URL,
    composed by interpolation in group_data/all.py from the secrets and db1's address."""
    if "DEPLOYKIT_JOBS_TEST_TAGS" not in os.environ:
        request.getfixturevalue("on_v1")  # builds and pushes v1 and v2
    run = provision("inventories/sandbox.py")
    assert run.returncode == 0, run.failure_excerpt()
    url = f"redis://:{fleet.secrets()['REDIS_PASSWORD']}@{fleet.ip('db1')}:6379/0"
    code, env_file = fleet.sh("job1", "cat /etc/deploykit/app.env")
    assert code == 0 and f"REDIS_URL={url}" in env_file.splitlines()
    fleet.jobs_inventory = "inventories/sandbox.py"
    return fleet


def provision(inventory):
    return pyinfra(str(inventory), "deploys/provision.py", "--limit", "db1", "--limit", "job1")


def roll_workers(fleet, tag: str):
    return pyinfra(
        fleet.jobs_inventory,
        "deploys/jobs.py",
        "--data",
        f"image_tag={tag}",
        "--data",
        f"jobs_workers_per_host={WORKERS}",
    )


def workers_on(fleet, host: str = "job1") -> list[tuple[str, str]]:
    """(tag, state) of every worker container on the host, read by docker itself."""
    code, output = fleet.sh(
        host,
        "docker ps --all --filter label=io.deploykit.role=worker "
        "--format '{{.Label \"io.deploykit.tag\"}} {{.State}}'",
    )
    assert code == 0, output
    return sorted(tuple(line.split()) for line in output.splitlines() if line.strip())


def enqueue(fleet, job_id: str, seconds: float) -> None:
    job = json.dumps({"id": job_id, "seconds": seconds})
    fleet.redis_cli("HSET", STATUS, job_id, "queued")
    fleet.redis_cli("LPUSH", QUEUE, job)


# -- Redis --------------------------------------------------------------------------------


def test_redis_requires_its_password(jobs_world):
    fleet = jobs_world
    code, output = fleet.sh(
        "job1",
        f'bash -c \'exec 3<>/dev/tcp/{fleet.ip("db1")}/6379 && printf "PING\\r\\n" >&3 '
        "&& timeout 2 head -n 1 <&3'",
    )
    assert output.startswith("-NOAUTH Authentication required"), (code, output)
    assert fleet.redis_cli("PING") == "PONG"
    # The password reached db1 only inside its config file, private to root and redis.
    code, output = fleet.sh("db1", "stat -c '%a %U %G' /etc/redis/redis.conf; ps -eo args")
    assert output.splitlines()[0] == "640 root redis"
    assert fleet.secrets()["REDIS_PASSWORD"] not in output


def test_redis_listens_on_the_private_address_for_web_and_job_hosts_only(jobs_world):
    fleet = jobs_world
    code, output = fleet.sh("db1", "ss -Hltn 'sport = :6379' | awk '{print $4}'")
    assert sorted(output.split()) == sorted([f"{fleet.ip('db1')}:6379", "127.0.0.1:6379"])
    assert fleet.can_connect("web1", "db1", 6379)
    assert fleet.can_connect("job1", "db1", 6379)
    assert not fleet.can_connect("lb1", "db1", 6379)


def test_redis_persists_to_an_append_only_file_and_snapshots(jobs_world):
    fleet = jobs_world
    assert fleet.redis_cli("CONFIG", "GET", "appendonly").split() == ["appendonly", "yes"]
    assert fleet.redis_cli("CONFIG", "GET", "save").split()[1:] != []
    code, output = fleet.sh("db1", "ls /var/lib/redis/appendonlydir")
    assert code == 0 and ".aof" in output


def test_provisioning_again_changes_nothing(jobs_world):
    run = provision(jobs_world.jobs_inventory)
    totals = run.grand_total()
    assert totals["changed"] == 0 and totals["errors"] == 0, (
        run.changed_operations(),
        run.failure_excerpt(),
    )


# -- the workers' roll ------------------------------------------------------------------------


def test_workers_roll_while_working_and_every_job_is_done_exactly_once(jobs_world):
    fleet = jobs_world
    run = roll_workers(fleet, OLD_TAG)
    assert run.returncode == 0, run.failure_excerpt()
    assert workers_on(fleet) == [(OLD_TAG, "running")] * WORKERS

    keys = fleet.redis_cli("--scan", "--pattern", "deploykit:*").split()
    if keys:
        fleet.redis_cli("DEL", *keys)
    # A long job, in a worker's hands when the roll reaches it, then short ones queued.
    enqueue(fleet, "long", LONG_JOB_S)
    wait_for(
        lambda: fleet.redis_cli("HGET", STATUS, "long") == "running", timeout=20, what="long job"
    )
    ids = ["long"] + [f"job-{n:02d}" for n in range(19)]
    for n, job_id in enumerate(ids[1:]):
        enqueue(fleet, job_id, 1 + n % 3)

    run = roll_workers(fleet, NEW_TAG)
    assert run.returncode == 0, run.failure_excerpt()
    # The stop phase waited for a job in hand longer than any short job (at most 3 s).
    row = re.search(
        rf"job1\s+{OLD_TAG}@[0-9a-f]{{12}} -> {NEW_TAG}@[0-9a-f]{{12}}\s+(\S+)", run.output
    )
    assert row and float(row.group(1)) >= 5, run.output[-3000:]
    assert workers_on(fleet) == [(NEW_TAG, "running")] * WORKERS

    wait_for(
        lambda: fleet.redis_cli("HLEN", DONE) == "20",
        timeout=120,
        interval=0.5,
        what="every job done",
    )
    finished = Counter(fleet.redis_cli("LRANGE", FINISHED, "0", "-1").split())
    assert finished == Counter({job_id: 1 for job_id in ids})
    assert fleet.redis_cli("LLEN", QUEUE) == "0"
    for key in fleet.redis_cli("--scan", "--pattern", "deploykit:processing:*").split():
        assert fleet.redis_cli("LLEN", key) == "0", key
    assert json.loads(fleet.redis_cli("HGET", DONE, "long"))["version"] == OLD_TAG

    # The new workers take jobs.
    enqueue(fleet, "after-roll", 0)
    wait_for(lambda: fleet.redis_cli("HGET", STATUS, "after-roll") == "done", timeout=20)
    assert json.loads(fleet.redis_cli("HGET", DONE, "after-roll"))["version"] == NEW_TAG


def test_a_worker_that_never_gets_ready_stops_the_roll_and_the_old_one_runs_again(jobs_world):
    fleet = jobs_world
    assert workers_on(fleet) == [(NEW_TAG, "running")] * WORKERS
    # A ready line the worker never logs: the new worker "does not come up".
    run = pyinfra(
        fleet.jobs_inventory,
        "deploys/jobs.py",
        "--data",
        f"image_tag={OLD_TAG}",
        "--data",
        f"jobs_workers_per_host={WORKERS}",
        "--data",
        "jobs_ready_line=never logged",
        "--data",
        "jobs_ready_timeout_s=2",
    )
    assert run.returncode != 0
    assert "WORKER ROLL STOPPED at job1: new worker worker-1-" in run.output
    assert "job1's previous workers were started again" in run.output
    assert workers_on(fleet) == [(NEW_TAG, "running")] * WORKERS
    enqueue(fleet, "after-failed-roll", 0)
    wait_for(lambda: fleet.redis_cli("HGET", STATUS, "after-failed-roll") == "done", timeout=20)


def test_a_oneoff_on_a_job_host_runs_the_workers_tag_with_their_env_file(jobs_world):
    # job1 runs no app container: the tag comes from its workers.
    assert workers_on(jobs_world) == [(NEW_TAG, "running")] * WORKERS
    run = pyinfra(
        "inventories/sandbox.py",
        "deploys/oneoff/run.py",
        "--data",
        "oneoff_host=job1",
        "--data",
        "oneoff_command=sh -c 'echo version=$APP_VERSION;"
        ' test -n "$REDIS_URL" && echo has-redis\'',
    )
    assert run.returncode == 0, run.failure_excerpt()
    assert f"version={NEW_TAG}" in run.output and "has-redis" in run.output
