"""Bootstrap and provisioning on fresh sandbox hosts: one run each, then nothing to do."""

from __future__ import annotations

import time

import pytest

from .sandbox_world import copy_sandbox_inventory, pyinfra

# Also on Debian 12 hosts (bootstrap and provision twice): make test's second phase.
pytestmark = pytest.mark.every_release


def test_bootstrap_and_provision_succeed_in_one_run_each(first_runs):
    for name in ("bootstrap", "provision"):
        run = first_runs[name]
        assert run.returncode == 0, run.failure_excerpt()
        assert run.grand_total()["errors"] == 0
        assert run.grand_total()["changed"] > 0


def test_docker_group_takes_effect_in_the_first_run(first_runs):
    # The op adds deploy to the docker group, reconnects and runs `docker info` as deploy,
    # without sudo, all in the FIRST provision run; its row shows 4 changed hosts.
    row = next(
        line
        for line in first_runs["provision"].output.splitlines()
        if "Ensure deploy runs docker without sudo" in line and line.strip().endswith("-")
    )
    assert row.split()[-4:] == ["4", "4", "-", "-"], row


def test_second_runs_change_nothing(first_runs):
    for name in ("bootstrap_again", "provision_again"):
        totals = first_runs[name].grand_total()
        assert totals["changed"] == 0 and totals["errors"] == 0, (
            first_runs[name].changed_operations(),
            first_runs[name].failure_excerpt(),
        )


def test_deploy_user_runs_docker_without_sudo(fleet):
    for name in fleet.hosts("web") + fleet.hosts("job"):
        result = fleet.ssh(name, "docker ps --format '{{.ID}}' && id -nG")
        assert result.returncode == 0, result.stdout
        assert "docker" in result.stdout.split()


def test_deploy_user_has_passwordless_sudo_from_a_validated_file(fleet):
    for name in fleet.hosts():
        code, output = fleet.sh(name, "stat -c '%a %U %G' /etc/sudoers.d/deploy")
        assert (code, output.strip()) == (0, "440 root root")
        assert fleet.ssh(name, "sudo -n true").returncode == 0


def test_sshd_refuses_root_and_passwords(fleet):
    for name in fleet.hosts():
        code, output = fleet.sh(name, "sshd -T")
        settings = dict(line.split(" ", 1) for line in output.splitlines() if " " in line)
        assert code == 0
        assert settings["permitrootlogin"] == "no"
        assert settings["passwordauthentication"] == "no"
        assert settings["kbdinteractiveauthentication"] == "no"
        assert settings["allowusers"] == "deploy"


def test_root_login_over_ssh_is_refused(fleet):
    result = fleet.ssh("web1", "true", user="root")
    assert result.returncode == 255
    assert "Permission denied" in result.stdout
    assert fleet.ssh("web1", "true", user="deploy").returncode == 0


def test_services_are_active(fleet):
    for name in fleet.hosts():
        code, output = fleet.sh(name, "systemctl is-active ssh deploykit-firewall")
        assert output.split() == ["active", "active"], (name, output)
    for name in fleet.hosts("web") + fleet.hosts("job"):
        code, output = fleet.sh(name, "systemctl is-active docker; docker info -f '{{.Driver}}'")
        assert output.split() == ["active", "overlay2"], (name, output)


def test_docker_rotates_container_logs(fleet):
    code, output = fleet.sh(
        "web1", "docker info -f '{{.LoggingDriver}}'; cat /etc/docker/daemon.json"
    )
    assert output.startswith("json-file")
    assert '"max-size": "10m"' in output and '"max-file": "5"' in output


def start_probe(fleet, host: str, port: int) -> None:
    fleet.sh(host, f"systemd-run --unit=probe-{port} python3 -m http.server {port}")


@pytest.fixture
def listeners(fleet):
    """Real listeners: PostgreSQL on db1:5432 (allowed from web/job; provisioned), a
    throwaway one on db1:8999 (not in the matrix), and web1:80 (allowed from lb only):
    the app's nginx when a release runs there, else a throwaway one."""
    _, output = fleet.sh("db1", f"systemctl is-active {fleet.postgres_service()}")
    assert output.strip() == "active", "provision must have started PostgreSQL on db1"
    start_probe(fleet, "db1", 8999)
    _, web_listener = fleet.sh("web1", "ss -H -l -t -n 'sport = :80'")
    web_probe = not web_listener.strip()
    if web_probe:
        start_probe(fleet, "web1", 80)
    time.sleep(1)
    yield
    fleet.sh("db1", "systemctl stop probe-8999")
    if web_probe:
        fleet.sh("web1", "systemctl stop probe-80")


def test_firewall_opens_role_ports_to_named_roles_only(fleet, listeners):
    assert fleet.can_connect("web1", "db1", 5432)
    assert fleet.can_connect("job1", "db1", 5432)
    assert not fleet.can_connect("lb1", "db1", 5432)  # lb is not in db's 5432 sources
    assert not fleet.can_connect("web1", "db1", 8999)  # not in the matrix at all
    assert fleet.can_connect("lb1", "web1", 80)
    assert not fleet.can_connect("job1", "web1", 80)  # web's port 80 is for lb only
    assert not fleet.can_connect("db1", "web1", 80)
    for host, port in (("db1", 8999), ("web1", 80)):
        code, _ = fleet.sh(host, f"timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'")
        assert code == 0, f"{host}:{port} must listen, or the closed checks prove nothing"


def test_firewall_survives_a_reboot(fleet, listeners):
    fleet.container("db1").restart(timeout=20)
    deadline = time.monotonic() + 90
    while fleet.ssh("db1", "systemctl is-system-running --wait").returncode not in (0, 1):
        assert time.monotonic() < deadline, "db1 did not come back"
        time.sleep(1)
    start_probe(fleet, "db1", 8999)
    time.sleep(1)
    code, output = fleet.sh("db1", "nft list table inet deploykit_firewall")
    assert code == 0 and "policy drop" in output
    code, output = fleet.sh("db1", f"systemctl is-active {fleet.postgres_service()}")
    assert output.strip() == "active", "PostgreSQL must come back after a reboot"
    assert fleet.can_connect("web1", "db1", 5432)
    assert not fleet.can_connect("lb1", "db1", 5432)
    assert not fleet.can_connect("web1", "db1", 8999)


def test_typo_in_group_data_stops_before_any_change(fleet, tmp_path):
    inventory = copy_sandbox_inventory(tmp_path)
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "web.py").write_text('docker_log_max_sizee = "5m"\n')
    run = pyinfra(str(inventory), "deploys/provision.py")
    assert run.returncode != 0
    assert "group_data/web.py:1: unknown key 'docker_log_max_sizee'" in run.output
    assert "did you mean 'docker_log_max_size'?" in run.output
    assert "Starting operation" not in run.output


def test_empty_web_group_stops_before_any_change(fleet, tmp_path):
    inventory = copy_sandbox_inventory(tmp_path, extra="\nweb = []\n")
    run = pyinfra(str(inventory), "deploys/provision.py")
    assert run.returncode != 0
    assert f"{inventory}: no hosts in group 'web'; this deploy needs it" in run.output
    assert "Starting operation" not in run.output


def test_only_root_and_the_deploy_user_can_create_the_images_lock(fleet):
    lock = "/run/deploykit/images.lock"
    for name in fleet.hosts("web") + fleet.hosts("job"):
        code, output = fleet.sh(name, "stat -c '%a %U' /run/deploykit")
        assert (code, output.strip()) == (0, "700 deploy"), name
        # Another local user cannot create the lock file first and block every pull.
        code, output = fleet.sh(name, f"su nobody -s /bin/sh -c 'touch {lock}'")
        assert code != 0 and "Permission denied" in output, (name, output)
        # A lock file the deploy user created does not stop root's flock (a pull runs
        # with sudo, a cleanup as deploy).
        code, output = fleet.sh(
            name, f"rm -f {lock} && su deploy -c 'flock {lock} true' && flock -w 5 {lock} true"
        )
        assert code == 0, (name, output)
    # /run is empty after a boot: tmpfiles.d makes the folder again, as at boot, and the
    # lock file in it the deploy user's: a pull (root, umask 027) that came first would
    # have made it root's 0640, which the deploy user's cleanup could not open.
    code, output = fleet.sh(
        "web1",
        "rm -rf /run/deploykit && systemd-tmpfiles --boot --create /etc/tmpfiles.d/deploykit.conf"
        f" && stat -c '%a %U' /run/deploykit {lock} && flock -w 5 {lock} true"
        f" && su deploy -c 'flock -w 5 {lock} echo taken'",
    )
    assert (code, output.split()) == (0, ["700", "deploy", "600", "deploy", "taken"]), output


def test_a_tls_key_git_would_store_unencrypted_is_refused_while_planning(fleet, tmp_path):
    # A key inside the repository that no .gitattributes rule puts under git-crypt: a
    # plain `git add` would publish it. Refused before any host is touched.
    from sandbox.tls import ensure_self_signed_pem

    from .sandbox_world import REPO_ROOT

    key = REPO_ROOT / "files" / f"test-{time.time_ns()}.pem"
    ensure_self_signed_pem(key)
    try:
        inventory = copy_sandbox_inventory(tmp_path)
        (tmp_path / "group_data").mkdir()
        (tmp_path / "group_data" / "sandbox.py").write_text(
            f"haproxy_tls_certificate = {str(key.relative_to(REPO_ROOT))!r}\n"
        )
        _, before = fleet.sh("lb1", "sha1sum /etc/haproxy/certs/site.pem")
        run = pyinfra(str(inventory), "deploys/provision.py", "--limit", "lb")
    finally:
        key.unlink()
    assert run.returncode != 0
    assert (
        f"haproxy_tls_certificate: {key.relative_to(REPO_ROOT)} holds a private key that git "
        "would store unencrypted" in run.output
    ), run.output[-3000:]
    assert "refusing to run, nothing was changed" in run.output
    assert "Traceback" not in run.output
    assert fleet.sh("lb1", "sha1sum /etc/haproxy/certs/site.pem")[1] == before


def test_a_locked_tls_key_is_refused_while_planning(fleet, tmp_path):
    from deploykit.secrets import GIT_CRYPT_MAGIC

    locked = tmp_path / "haproxy.pem"
    locked.write_bytes(GIT_CRYPT_MAGIC + b"\x8f\x01not a key")
    inventory = copy_sandbox_inventory(tmp_path)
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "sandbox.py").write_text(
        f"haproxy_tls_certificate = {str(locked)!r}\n"
    )
    run = pyinfra(str(inventory), "deploys/provision.py", "--limit", "lb")
    assert run.returncode != 0
    assert f"haproxy_tls_certificate: {locked} is still encrypted by git-crypt" in run.output
    assert "git-crypt unlock" in run.output
    assert "Traceback" not in run.output
