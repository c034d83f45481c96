"""Day-to-day operations on the sandbox: the deploy lock and audit log, status, the
dry-run plan and diff, central logging, and image and container hygiene."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from deploykit.commands.images import Version

from .sandbox_world import (
    AUDIT,
    LOCK,
    PYINFRA,
    REPO_ROOT,
    BackgroundPyinfra,
    World,
    audit_entries,
    group_data,
    lb_urls,
    deploy_args,
    lock_exists,
    other_tag,
    pushed_digest,
    pyinfra,
    wait_for,
)

REMOTE_LOGS = "/var/log/deploykit/remote"


def pyinfra_without_yes(*args: str) -> subprocess.CompletedProcess:
    """pyinfra prints --diff only when it would ask to confirm: no -y here."""
    return subprocess.run(
        [PYINFRA, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def unlocked_fleet(on_v1):
    # Whatever ran before, nobody holds the lock when each test starts.
    assert not lock_exists(on_v1), on_v1.sh("lb1", f"cat {LOCK}")[1]
    return on_v1


# -- deploy lock and audit log ----------------------------------------------------------


def test_a_second_deploy_is_refused_at_once_naming_the_holder(unlocked_fleet):
    fleet = unlocked_fleet
    target = other_tag(fleet)
    before = len(audit_entries(fleet))
    roll = BackgroundPyinfra(*deploy_args(target), env={"DEPLOYKIT_DEPLOYER": "ann@laptop"})
    wait_for(lambda: lock_exists(fleet), timeout=120, what="the first deploy's lock")
    second = pyinfra(*deploy_args(target), env={"DEPLOYKIT_DEPLOYER": "bob@ci"})
    first = roll.wait()

    assert second.returncode != 0
    assert "another deploy holds the lock on lb1" in second.output
    assert "ann@laptop since" in second.output
    pinned = Version(target, pushed_digest(target)).short
    assert f"deploy {pinned} (pid {roll.process.pid})" in second.output
    assert "Starting operation" not in second.output  # refused before any operation
    assert first.returncode == 0, first.failure_excerpt()
    assert {fleet.running_tag(name) for name in fleet.hosts("web")} == {target}
    assert not lock_exists(fleet), "the lock outlived the deploy that held it"

    entries = audit_entries(fleet)[before:]
    assert [(e["who"], e["event"], e.get("result")) for e in entries] == [
        ("ann@laptop", "started", None),
        ("ann@laptop", "finished", "succeeded"),
    ]
    assert entries[0]["action"] == "deploy" and entries[0]["tag"] == pinned
    assert entries[0]["hosts"] == fleet.hosts("web")
    _, mode = fleet.sh("lb1", f"stat -c '%a %U' {AUDIT}")
    assert mode.strip() == "640 root"


def test_a_failed_roll_is_audited_with_its_reason_and_releases_the_lock(unlocked_fleet):
    fleet = unlocked_fleet
    before = len(audit_entries(fleet))
    run = pyinfra(*deploy_args("broken"))
    assert run.returncode != 0
    finished = audit_entries(fleet)[before:][-1]
    assert finished["event"] == "finished" and finished["result"] == "failed"
    assert finished["stopped_at"] == "web1"
    assert "health check failed" in finished["reason"]
    assert not lock_exists(fleet)


def test_a_stale_lock_blocks_deploys_until_released_explicitly(unlocked_fleet):
    fleet = unlocked_fleet
    holder = {
        "who": "carol@lost-laptop",
        "when": "2026-01-01T00:00:00Z",
        "action": "deploy",
        "tag": "v9",
        "pid": 4242,
        "token": "dead",
    }
    fleet.sh("lb1", f"mkdir -p /var/lib/deploykit && echo '{json.dumps(holder)}' > {LOCK}")

    status = pyinfra("inventories/sandbox.py", "deploys/status.py")
    assert status.returncode == 0, status.failure_excerpt()
    assert "deploy lock on lb1: carol@lost-laptop since 2026-01-01T00:00:00Z" in status.output

    refused = pyinfra(*deploy_args(fleet.running_tag("web1")))
    assert refused.returncode != 0
    assert "carol@lost-laptop since 2026-01-01T00:00:00Z: deploy v9 (pid 4242)" in refused.output
    assert lock_exists(fleet), "a refused deploy must never break the lock"

    dry = pyinfra("inventories/sandbox.py", "deploys/unlock.py", "--dry")
    assert dry.returncode == 0 and lock_exists(fleet)

    released = pyinfra("inventories/sandbox.py", "deploys/unlock.py")
    assert released.returncode == 0, released.failure_excerpt()
    assert "released the deploy lock on lb1, held by carol@lost-laptop" in released.output
    assert not lock_exists(fleet)
    last = audit_entries(fleet)[-1]
    assert last["event"] == "unlocked" and "carol@lost-laptop" in last["released"]


def test_a_dry_run_takes_no_lock_and_writes_no_audit_line(unlocked_fleet):
    fleet = unlocked_fleet
    before = audit_entries(fleet)
    tags = {name: fleet.running_tag(name) for name in fleet.hosts("web")}
    run = pyinfra(*deploy_args(other_tag(fleet), "--dry"))
    assert run.returncode == 0, run.failure_excerpt()
    assert "deploykit: plan: roll" in run.output
    assert audit_entries(fleet) == before
    assert not lock_exists(fleet)
    assert {name: fleet.running_tag(name) for name in fleet.hosts("web")} == tags


def test_provision_is_refused_while_a_roll_holds_the_lock(unlocked_fleet):
    # Provision can restart dockerd, reload HAProxy and rewrite env files: never in the
    # middle of a roll. It takes the lock, and says so in the audit log.
    fleet = unlocked_fleet
    target = other_tag(fleet)
    roll = BackgroundPyinfra(*deploy_args(target), env={"DEPLOYKIT_DEPLOYER": "ann@laptop"})
    wait_for(lambda: lock_exists(fleet), timeout=300, what="the roll's lock")
    _, config_before = fleet.sh("lb1", "sha256sum /etc/haproxy/haproxy.cfg")
    provision = pyinfra(
        "inventories/sandbox.py",
        "deploys/provision.py",
        "--limit",
        "lb",
        "--data",
        "haproxy_timeout_server_ms=45000",
        env={"DEPLOYKIT_DEPLOYER": "bob@ci"},
    )
    rolled = roll.wait()
    assert provision.returncode != 0
    assert "another deploy holds the lock on lb1" in provision.output
    assert "ann@laptop since" in provision.output and f"deploy {target}" in provision.output
    assert "Starting operation" not in provision.output
    assert fleet.sh("lb1", "sha256sum /etc/haproxy/haproxy.cfg")[1] == config_before
    assert rolled.returncode == 0, rolled.failure_excerpt()
    assert not lock_exists(fleet)

    before = len(audit_entries(fleet))
    again = pyinfra("inventories/sandbox.py", "deploys/provision.py", "--limit", "lb")
    assert again.returncode == 0, again.failure_excerpt()
    assert [(e["action"], e["event"], e.get("result")) for e in audit_entries(fleet)[before:]] == [
        ("provision", "started", None),
        ("provision", "finished", "succeeded"),
    ]
    assert not lock_exists(fleet)


def test_a_lock_someone_else_took_meanwhile_survives_the_runs_release(unlocked_fleet):
    # While a roll runs, its lock is released by hand and taken by another deploy: the
    # roll's own release at its end must leave the other holder's lock alone.
    fleet = unlocked_fleet
    other = json.dumps({"who": "dave@ci", "token": "not-the-rolls", "action": "deploy"})
    roll = BackgroundPyinfra(*deploy_args(other_tag(fleet)))
    wait_for(lambda: lock_exists(fleet), timeout=300, what="the roll's lock")
    code, output = fleet.sh("lb1", f"printf '%s\\n' '{other}' > {LOCK}.new && mv {LOCK}.new {LOCK}")
    assert code == 0, output
    finished = roll.wait()
    try:
        assert lock_exists(fleet), "the roll released a lock it no longer held"
        assert fleet.sh("lb1", f"cat {LOCK}")[1].strip() == other
        assert "the deploy lock on lb1 was no longer this run's" in finished.output
    finally:
        fleet.sh("lb1", f"rm -f {LOCK}")


def test_sigterm_ends_a_roll_like_ctrl_c_releasing_the_lock_with_an_audit_line(unlocked_fleet):
    # A cancelled CI job: SIGTERM finishes the host in progress, releases the lock and
    # says so in the audit log (Python's default would die with the lock held).
    fleet = unlocked_fleet
    before = len(audit_entries(fleet))
    target = other_tag(fleet)
    roll = BackgroundPyinfra(*deploy_args(target))
    wait_for(lambda: lock_exists(fleet), timeout=300, what="the roll's lock")
    wait_for(
        lambda: "Starting operation: Roll" in roll.log.read_text(), timeout=300, what="the roll"
    )
    roll.process.terminate()
    run = roll.wait()
    assert not lock_exists(fleet), run.output[-3000:]
    finished = audit_entries(fleet)[before:][-1]
    assert finished["event"] == "finished" and finished.get("signal") == "SIGTERM", finished
    # The host in progress was finished: every server is back in rotation.
    wait_for(lambda: set(fleet.server_states().values()) == {"UP"}, what="all servers UP")
    tags = {fleet.running_tag(name) for name in fleet.hosts("web")}
    assert None not in tags
    # A plain re-run finishes the roll the signal stopped (and the next tests find one
    # release everywhere).
    rerun = pyinfra(*deploy_args(target))
    assert rerun.returncode == 0, rerun.failure_excerpt()
    assert {fleet.running_tag(name) for name in fleet.hosts("web")} == {target}


# -- status -----------------------------------------------------------------------------


def test_status_shows_each_hosts_tag_health_and_lb_state_then_the_audit(unlocked_fleet):
    fleet = unlocked_fleet
    fleet.set_server_state("lb1", "web2", "drain")
    try:
        run = pyinfra("inventories/sandbox.py", "deploys/status.py")
    finally:
        fleet.set_server_state("lb1", "web2", "ready")
    assert run.returncode == 0, run.failure_excerpt()
    tag = fleet.running_tag("web1")
    lines = run.output.splitlines()
    for name in fleet.hosts("web"):
        row = next(line for line in lines if line.split()[:2] == [name, "app"])
        # The tag and the short digest it was pinned to.
        assert row.split()[2:4] == [Version(tag, pushed_digest(tag)).short, "healthy"], row
        expected = "lb1: DRAIN" if name == "web2" else "lb1: UP"
        assert expected in row and "sess" in row, row
    assert "deploy lock on lb1: free" in run.output
    assert f"deploy {tag}" in run.output.split("last deploys")[1]
    assert "Starting operation" not in run.output  # a report: nothing runs on the hosts


# -- dry run diff -----------------------------------------------------------------------


def test_dry_diff_of_provision_shows_a_template_change_and_changes_nothing(unlocked_fleet):
    fleet = unlocked_fleet
    template = REPO_ROOT / "templates" / "haproxy.cfg.j2"
    original = template.read_text()
    probe = f"# diff probe {uuid.uuid4().hex[:8]}"
    _, live_before = fleet.sh("lb1", "sha256sum /etc/haproxy/haproxy.cfg")
    template.write_text(original + probe + "\n")
    try:
        run = pyinfra_without_yes(
            "inventories/sandbox.py", "deploys/provision.py", "--dry", "--diff", "--limit", "lb1"
        )
    finally:
        template.write_text(original)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "Will modify /etc/haproxy/haproxy.cfg" in output
    added = [line.strip() for line in output.splitlines() if probe in line]
    assert added and added[0].startswith("+"), added
    assert fleet.sh("lb1", "sha256sum /etc/haproxy/haproxy.cfg")[1] == live_before
    assert fleet.sh("lb1", "grep -c 'diff probe' /etc/haproxy/haproxy.cfg")[1].strip() == "0"


# -- central logging --------------------------------------------------------------------


def remote_log_has(fleet: World, path_glob: str, marker: str):
    return lambda: fleet.sh("db1", f"grep -l {marker} {REMOTE_LOGS}/{path_glob}")[0] == 0


def test_a_requests_log_line_reaches_the_log_host(unlocked_fleet):
    fleet = unlocked_fleet
    import urllib.request

    marker = f"probe-{uuid.uuid4().hex[:12]}"
    with urllib.request.urlopen(f"{lb_urls()[0]}?marker={marker}", timeout=5) as r:
        assert r.status == 200
    wait_for(remote_log_has(fleet, "web*/docker.log", marker), timeout=30, what="the log line")
    _, line = fleet.sh("db1", f"grep -h {marker} {REMOTE_LOGS}/web*/docker.log")
    assert f"GET /?marker={marker}" in line
    # Docker's own logs still work: the json-file driver and its rotation are kept.
    served_by = [
        name
        for name in fleet.hosts("web")
        if marker
        in fleet.sh(
            name, "docker logs $(docker ps -q --filter label=io.deploykit.role=nginx) 2>&1"
        )[1]
    ]
    assert len(served_by) == 1


def test_syslog_lines_wait_while_the_log_host_is_down_and_arrive_after(unlocked_fleet):
    fleet = unlocked_fleet
    marker = f"queued-{uuid.uuid4().hex[:12]}"
    # The socket too: a local syslog line would start rsyslog again at once.
    fleet.sh("db1", "systemctl stop syslog.socket rsyslog.service")
    try:
        assert fleet.sh("lb1", f"logger -t deploykit-probe {marker}")[0] == 0
        assert not fleet.can_connect("lb1", "db1", 2514)
    finally:
        fleet.sh("db1", "systemctl start syslog.socket rsyslog.service")
    wait_for(
        remote_log_has(fleet, "lb1/deploykit-probe.log", marker), timeout=60, what="queued line"
    )


def test_the_log_port_is_closed_to_the_outside(unlocked_fleet):
    fleet = unlocked_fleet
    _, listening = fleet.sh("db1", "ss -ltn 'sport = :2514'")
    assert fleet.ip("db1") + ":2514" in listening and "0.0.0.0:2514" not in listening


# -- image and container hygiene -------------------------------------------------------


def test_data_containers_and_volumes_survive_a_deploy_and_its_cleanup(unlocked_fleet):
    fleet = unlocked_fleet
    nginx = group_data("sandbox")["app_nginx_image"]
    setup = (
        "docker volume create deploykit-test-keep >/dev/null && "
        "docker run --rm --entrypoint sh -v deploykit-test-keep:/data "
        f"{nginx} -c 'echo precious > /data/f' && "
        "docker create --name deploykit-test-data-only --entrypoint true "
        f"-v deploykit-test-keep:/data {nginx} >/dev/null && "
        f"scratch=$(docker create --entrypoint true {nginx}) && "
        "docker commit $scratch && docker rm $scratch >/dev/null"
    )
    code, output = fleet.sh("web1", setup, user="root")
    assert code == 0, output
    dangling = output.strip().splitlines()[-1]  # the committed image has no tag: dangling
    try:
        run = pyinfra(*deploy_args(other_tag(fleet)))
        assert run.returncode == 0, run.failure_excerpt()
        code, content = fleet.sh(
            "web1",
            f"docker run --rm --entrypoint cat -v deploykit-test-keep:/data {nginx} /data/f",
        )
        assert (code, content.strip()) == (0, "precious")
        assert fleet.sh("web1", "docker inspect deploykit-test-data-only")[0] == 0
        assert fleet.sh("web1", f"docker image inspect {dangling}")[0] != 0, "dangling kept"
    finally:
        fleet.sh(
            "web1", "docker rm -f deploykit-test-data-only; docker volume rm deploykit-test-keep"
        )
