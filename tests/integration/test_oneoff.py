"""One-off commands, the release command, the console and accessories, on the sandbox.

One-offs and consoles run `docker run --rm` on one web host beside its running pair;
the release-command runs roll the tag the hosts already run (a no-op roll); the
accessory lives on job1 under a group_data folder of the test's own.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

import pytest

from deploykit.commands.images import Version

from .sandbox_world import (
    REPO_ROOT,
    BackgroundPyinfra,
    copy_sandbox_inventory,
    pushed_digest,
    pyinfra,
    registry_from_here,
    wait_for,
)

# An app image with manage.py, under a tag of this module's own (the shared v1 may
# predate manage.py when the sandbox is reused).
MIGRATE_TAG = "oneoff-migrate"
ECHO_IMAGE = "registry:5000/deploykit/echo-accessory:1"


def oneoff(deploy: str, *data: str):
    args = [item for pair in data for item in ("--data", pair)]
    return pyinfra("inventories/sandbox.py", f"deploys/oneoff/{deploy}.py", *args)


def running(fleet) -> str:
    """The tag every web host runs (on_v1 put them on v1; a module before may have moved
    them on together)."""
    tags = {fleet.running_tag(name) for name in fleet.hosts("web")}
    assert len(tags) == 1 and None not in tags, tags
    return tags.pop()


def no_oneoff_container_left(fleet, host: str) -> bool:
    _, output = fleet.sh(host, "docker ps -aq --filter label=io.deploykit.oneoff")
    return output.strip() == ""


@pytest.fixture(scope="module")
def migrate_image():
    built = subprocess.run(
        ["make", "-s", "-C", "app", "build-app", "push-app", f"TAG={MIGRATE_TAG}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILD_FLAGS": "--quiet", "REGISTRY": registry_from_here()},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return MIGRATE_TAG


# -- one-off commands ---------------------------------------------------------------------


def test_oneoff_runs_on_the_first_web_host_with_its_tag_and_env_file(on_v1):
    fleet = on_v1
    tag = running(fleet)
    run = oneoff(
        "run",
        "oneoff_command=sh -c '"
        'echo "version=$APP_VERSION workers=$GUNICORN_WORKERS"; '
        'test -n "$SECRET_KEY_BASE" && echo "secret=yes"'
        "'",
    )
    assert run.returncode == 0, run.failure_excerpt()
    # The running tag's APP_VERSION, and a variable that only the env file holds.
    assert f"[web1] version={tag} workers=2" in run.output
    assert "[web1] secret=yes" in run.output
    assert "deploykit: one-off exited with status 0" in run.output
    assert no_oneoff_container_left(fleet, "web1")
    assert fleet.running_tag("web1") == tag


def test_migrate_runs_on_a_chosen_host_with_a_chosen_tag(on_v1, migrate_image):
    fleet = on_v1
    run = oneoff("migrate", "oneoff_host=web2", f"image_tag={migrate_image}")
    assert f"[web2] migrate: app {migrate_image}" in run.output, run.output[-3000:]
    assert "[web1] migrate" not in run.output
    code, _ = fleet.sh("db1", "systemctl is-active --quiet postgresql")
    if code == 0:
        # The env file's DATABASE_URL leads to PostgreSQL on db1: the table is there.
        assert run.returncode == 0, run.failure_excerpt()
        assert "migrations `python3 /app/manage.py migrate` on web2" in run.output
        assert "[web2] migrate: 0001_initial" in run.output
        code, output = fleet.sh(
            "db1",
            "runuser -u postgres -- psql -tA -d app -c 'SELECT name FROM deploykit_migrations'",
        )
        assert (code, output.strip()) == (0, "0001_initial")
    else:  # no data tier in this sandbox: the failure is reported as such
        assert run.returncode != 0
        assert "migrate: cannot reach the database" in run.output
    assert no_oneoff_container_left(fleet, "web2")


def test_failing_oneoff_fails_the_run_and_says_so(on_v1, migrate_image):
    run = oneoff(
        "run",
        "oneoff_command=sh -c 'APP_MIGRATE_FAIL=1 exec python3 /app/manage.py migrate'",
        f"image_tag={migrate_image}",
    )
    assert run.returncode != 0
    assert "migrate: failing on purpose (APP_MIGRATE_FAIL=1)" in run.output
    assert (
        "deploykit: one-off command `sh -c 'APP_MIGRATE_FAIL=1 exec python3 /app/manage.py "
        f"migrate'` on web1 with registry:5000/deploykit/app:{migrate_image} FAILED "
        "(exit status 1)"
    ) in run.output


@pytest.mark.parametrize(
    "data, message",
    [
        ((), "oneoff_command is empty"),
        (("oneoff_command=hostname", "oneoff_host=web9"), "oneoff_host 'web9' is not a host"),
        (("oneoff_command=hostname", "oneoff_host=db1"), "'db1' is in neither group web nor job"),
        (("oneoff_command=sh -c 'unbalanced",), "oneoff_command: cannot split"),
    ],
)
def test_bad_oneoff_input_is_refused_while_planning(on_v1, data, message):
    run = oneoff("run", *data)
    assert run.returncode != 0
    assert "refusing to run, nothing was changed" in run.output
    assert message in run.output
    assert "Beginning operation run" not in run.output


# -- the release command ------------------------------------------------------------------


def web_containers(fleet) -> dict[str, str]:
    return {
        name: fleet.sh(name, "docker ps -a --format '{{.ID}} {{.Names}} {{.State}}' | sort")[1]
        for name in fleet.hosts("web")
    }


def test_failed_release_command_stops_the_deploy_before_any_drain(on_v1):
    fleet = on_v1
    tag = running(fleet)
    before = web_containers(fleet)
    deploy = BackgroundPyinfra(
        "inventories/sandbox.py",
        "deploys/web.py",
        "--data",
        f"image_tag={tag}",
        "--data",
        "rollout_release_command=sh -c 'echo migrating; exit 3'",
    )
    states_seen = set()
    while deploy.process.poll() is None:
        states_seen |= set(fleet.server_states().values())
        time.sleep(0.1)
    run = deploy.wait()
    assert run.returncode != 0
    pinned = Version(tag, pushed_digest(tag))
    assert (
        f"release command: sh -c 'echo migrating; exit 3' on web1 with {pinned.short}"
    ) in run.output
    assert "[web1] migrating" in run.output
    assert (
        "deploykit: release command `sh -c 'echo migrating; exit 3'` on web1 with "
        f"registry:5000/deploykit/app@{pinned.digest} FAILED (exit status 3); "
        "the roll did not start"
    ) in run.output
    # No server was ever drained, and no app container changed.
    assert states_seen == {"UP"}
    assert set(fleet.server_states().values()) == {"UP"}
    assert web_containers(fleet) == before


def test_release_command_runs_once_with_the_new_tag_then_the_roll(on_v1):
    fleet = on_v1
    tag = running(fleet)
    run = pyinfra(
        "inventories/sandbox.py",
        "deploys/web.py",
        "--data",
        f"image_tag={tag}",
        "--data",
        """rollout_release_command=sh -c 'echo "release-ran version=$APP_VERSION"'""",
    )
    assert run.returncode == 0, run.failure_excerpt()
    assert run.output.count(f"release-ran version={tag}") == 1
    assert f"[web1] release-ran version={tag}" in run.output
    # The release command ran before the roll.
    assert run.output.index("[web1] release-ran") < run.output.index("Starting operation: Roll")
    assert running(fleet) == tag
    assert set(fleet.server_states().values()) == {"UP"}


# -- the console --------------------------------------------------------------------------


def run_in_pty(argv: list[str], typed: str, prompt: bytes, timeout: float = 60) -> str:
    """Run `argv` on a new pseudo-terminal, wait for `prompt`, type `typed`, and return
    everything the terminal showed until the program exited."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the console, on the terminal
        os.chdir(REPO_ROOT)
        os.execv(argv[0], argv)
    seen = b""
    typed_yet = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the program exited and closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not typed_yet and seen.rstrip().endswith(prompt):
                os.write(fd, typed.encode())
                typed_yet = True
        else:
            raise AssertionError(f"console did not finish in {timeout}s: {seen!r}")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert typed_yet, f"no prompt {prompt!r} seen: {seen!r}"
    assert os.waitstatus_to_exitcode(status) == 0, seen
    return seen.decode(errors="replace").replace("\r\n", "\n")


def audit_lines(fleet) -> list[dict]:
    _, text = fleet.sh("lb1", "cat /var/log/deploykit/audit.log 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_console_opens_a_terminal_in_a_container_of_the_running_tag(on_v1):
    fleet = on_v1
    tag = running(fleet)
    audited_before = len(audit_lines(fleet))
    screen = run_in_pty(
        [str(REPO_ROOT / "bin" / "console"), "inventories/sandbox.py", "--", "sh"],
        typed=(
            'echo "version=$APP_VERSION"; test -t 0 && echo "tty=yes"; '
            'echo "workers=$GUNICORN_WORKERS"; test -n "$SECRET_KEY_BASE" && echo "secret=yes"; '
            "exit\n"
        ),
        prompt=b"$",
    )
    lines = [line.strip() for line in screen.splitlines()]
    # Lines of output, not the echo of what was typed (which holds `$APP_VERSION`).
    assert f"version={tag}" in lines, screen
    assert "tty=yes" in lines, screen
    assert "workers=2" in lines, screen
    assert "secret=yes" in lines, screen
    wait_for(lambda: no_oneoff_container_left(fleet, "web1"), timeout=10, what="console removed")
    # A shell with the production secrets: audited (who, host, tag, start and end).
    started, finished = audit_lines(fleet)[audited_before:]
    for entry in (started, finished):
        assert entry["action"] == "console" and entry["hosts"] == ["web1"], entry
        # The exact release the console ran: the host's tag and digest.
        assert entry["tag"] == f"{tag}@{pushed_digest(tag)}", entry
        assert entry["command"] == "sh", entry
        assert entry["who"] and entry["at"], entry
    assert started["event"] == "started"
    assert (finished["event"], finished["result"]) == ("finished", "exited 0")


def test_a_oneoff_is_audited_by_its_command_name_not_its_arguments(on_v1):
    fleet = on_v1
    before = len(audit_lines(fleet))
    run = oneoff("run", "oneoff_command=sh -c 'echo the-argument-$((6 * 7))'")
    assert run.returncode == 0, run.failure_excerpt()
    assert "the-argument-42" in run.output
    entries = audit_lines(fleet)[before:]
    assert [(e["action"], e["event"], e["command"]) for e in entries] == [
        ("oneoff", "started", "sh"),
        ("oneoff", "finished", "sh"),
    ]
    assert "the-argument" not in json.dumps(entries)


# -- accessories --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def accessory_inventory(tmp_path_factory, fleet):
    built = subprocess.run(
        ["make", "-s", "-C", "app", "build-accessory", "push-accessory"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILD_FLAGS": "--quiet", "REGISTRY": registry_from_here()},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    folder = tmp_path_factory.mktemp("accessory")
    (folder / "group_data").mkdir()
    inventory = copy_sandbox_inventory(folder)
    yield inventory
    # Whatever happened, no accessory or volume of this module stays on job1.
    fleet.sh("job1", "docker rm --force accessory-echo; docker volume rm echo-data")


def declare_echo(inventory, greeting: str | None) -> None:
    declaration = (
        {
            "echo": {
                "image": ECHO_IMAGE,
                "hosts": ["job1"],
                "ports": ["9200:9200"],
                "volumes": ["echo-data:/data"],
                "env": {"GREETING": greeting},
            }
        }
        if greeting
        else {}
    )
    (inventory.parent / "group_data" / "job.py").write_text(f"accessories = {declaration!r}\n")


def provision_job1(inventory):
    run = pyinfra(str(inventory), "deploys/provision.py", "--limit", "job1")
    assert run.returncode == 0, run.failure_excerpt()
    return run


def echo_container(fleet) -> tuple[str, str]:
    """(container id, GREETING) of the echo accessory on job1."""
    code, output = fleet.sh(
        "job1",
        "docker inspect -f '{{.Id}} {{.State.Status}}' accessory-echo && "
        "docker exec accessory-echo printenv GREETING",
    )
    assert code == 0, output
    first, greeting = output.strip().splitlines()
    container_id, status = first.split()
    assert status == "running", output
    return container_id, greeting


def fetch_from(fleet, source: str, path: str) -> str:
    code, output = fleet.sh(source, f"curl -fsS -m 5 http://{fleet.ip('job1')}:9200/{path}")
    assert code == 0, output
    return output


def test_accessory_runs_on_its_host_with_its_volume_and_firewall(fleet, accessory_inventory):
    declare_echo(accessory_inventory, "one")
    provision_job1(accessory_inventory)
    _, greeting = echo_container(fleet)
    assert greeting == "one"
    code, output = fleet.sh("job1", "docker volume inspect -f '{{.Name}}' echo-data")
    assert (code, output.strip()) == (0, "echo-data")
    code, output = fleet.sh("job1", "docker exec accessory-echo sh -c 'echo kept > /data/kept.txt'")
    assert code == 0, output
    # The web hosts may reach it; nobody else.
    assert fetch_from(fleet, "web1", "kept.txt") == "kept\n"
    assert not fleet.can_connect("db1", "job1", 9200)


def test_accessory_spec_change_recreates_it_and_keeps_its_volume(fleet, accessory_inventory):
    old_id, _ = echo_container(fleet)
    declare_echo(accessory_inventory, "two")
    provision_job1(accessory_inventory)
    new_id, greeting = echo_container(fleet)
    assert new_id != old_id and greeting == "two"
    assert fetch_from(fleet, "web1", "kept.txt") == "kept\n"


def test_second_provision_leaves_the_accessory_alone(fleet, accessory_inventory):
    before, _ = echo_container(fleet)
    run = provision_job1(accessory_inventory)
    assert run.grand_total()["changed"] == 0, run.changed_operations()
    assert echo_container(fleet)[0] == before


def test_undeclared_accessory_is_removed_and_its_volume_kept(fleet, accessory_inventory):
    declare_echo(accessory_inventory, None)
    provision_job1(accessory_inventory)
    _, output = fleet.sh("job1", "docker ps -a --filter label=io.deploykit.accessory -q")
    assert output.strip() == ""
    code, _ = fleet.sh("job1", "docker volume inspect echo-data")
    assert code == 0
