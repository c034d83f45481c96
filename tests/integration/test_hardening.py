"""Hardened hosts (issue 14), checked on the hosts themselves: what sshd offers and
refuses, what the firewall lets containers and bursts reach, the kernel and system
settings, the containers' confinement, and the audit trail on the log host."""

from __future__ import annotations

import hashlib
import uuid

import paramiko
import pytest

from deploykit.components.docker import DEFAULTS as DOCKER
from deploykit.components.hardening import DEFAULTS as HARDENING
from deploykit.components.hardening import SYSCTL_FILE

from .sandbox_world import World, copy_sandbox_inventory, group_data, pyinfra, wait_for

REMOTE_LOGS = "/var/log/deploykit/remote"
# The images the sandbox's hosts run, as its group data names them.
SANDBOX_DATA = group_data("sandbox")
NGINX_IMAGE = SANDBOX_DATA["app_nginx_image"]
APP_IMAGE = f"{SANDBOX_DATA['app_image']}:v1"


def sshd_settings(fleet: World, host: str) -> dict[str, str]:
    code, output = fleet.sh(host, "sshd -T")
    assert code == 0, output
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


def offered(fleet: World, host: str, query: str) -> set[str]:
    code, output = fleet.sh(host, f"ssh -Q {query}")
    assert code == 0, output
    return set(output.split())


def ssh_with(fleet: World, host: str, *options: str):
    """OpenSSH to `host` as deploy, with extra -o options (what the client offers)."""
    import subprocess

    command = ["ssh", "-i", fleet.cluster["ssh_key"], "-p", str(fleet.ssh_port(host))]
    command += ["-o", f"UserKnownHostsFile={fleet.cluster['known_hosts']}"]
    command += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
    for option in options:
        command += ["-o", option]
    return subprocess.run(
        [*command, "deploy@127.0.0.1", "true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )


# -- 1. SSH ------------------------------------------------------------------------------


def test_sshd_offers_exactly_the_strong_algorithms_this_openssh_has(fleet):
    for host in fleet.hosts():
        settings = sshd_settings(fleet, host)
        kex = [
            a for a in HARDENING["hardening_ssh_kex_algorithms"] if a in offered(fleet, host, "kex")
        ]
        assert settings["kexalgorithms"].split(",") == kex, host
        assert "curve25519-sha256" in kex and any(a.startswith("sntrup761") for a in kex)
        assert settings["ciphers"].split(",") == HARDENING["hardening_ssh_ciphers"]
        assert settings["macs"].split(",") == HARDENING["hardening_ssh_macs"]
        assert settings["hostkeyalgorithms"] == "ssh-ed25519"
        assert settings["hostkey"] == "/etc/ssh/ssh_host_ed25519_key"
        assert settings["pubkeyacceptedalgorithms"].split(",") == (
            HARDENING["hardening_ssh_pubkey_algorithms"]
        )
        assert settings["requiredrsasize"] == "3072"
        code, keys = fleet.sh(host, "ls /etc/ssh | grep ssh_host_")
        assert keys.split() == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"], host


@pytest.mark.parametrize(
    "options",
    [
        ["KexAlgorithms=ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521"],
        ["KexAlgorithms=diffie-hellman-group14-sha256,diffie-hellman-group16-sha512"],
        ["HostKeyAlgorithms=ecdsa-sha2-nistp256,rsa-sha2-512"],
        ["Ciphers=aes128-ctr", "MACs=hmac-sha1,umac-64@openssh.com,hmac-sha2-256"],
        ["Ciphers=aes128-cbc,aes256-cbc,3des-cbc"],
    ],
    ids=["nist-kex", "dh-kex", "ecdsa-rsa-hostkey", "weak-macs", "cbc-ciphers"],
)
def test_a_client_offering_only_removed_algorithms_is_refused(fleet, options):
    refused = ssh_with(fleet, "web1", *options)
    assert refused.returncode == 255, refused.stdout
    assert "no matching" in refused.stdout, refused.stdout
    assert ssh_with(fleet, "web1").returncode == 0  # the same client, default offer


def test_sshd_refuses_forwarding_and_shows_the_legal_banner(fleet):
    settings = sshd_settings(fleet, "web1")
    assert settings["disableforwarding"] == "yes"
    assert settings["loglevel"] == "VERBOSE"
    assert settings["maxauthtries"] == "3"
    assert settings["compression"] == "no"
    assert (settings["clientaliveinterval"], settings["clientalivecountmax"]) == ("60", "3")
    assert int(settings["maxsessions"]) >= 10  # pyinfra runs several channels at once
    forwarded = ssh_with(fleet, "web1", "LogLevel=INFO")
    assert "Authorized access only" in forwarded.stdout  # the banner, before login
    import subprocess

    tunnel = subprocess.run(
        [
            "ssh",
            "-i",
            fleet.cluster["ssh_key"],
            "-p",
            str(fleet.ssh_port("web1")),
            "-o",
            f"UserKnownHostsFile={fleet.cluster['known_hosts']}",
            "-o",
            "BatchMode=yes",
            "-W",
            "127.0.0.1:22",
            "deploy@127.0.0.1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    assert tunnel.returncode != 0 and "prohibited" in tunnel.stdout, tunnel.stdout


def test_paramiko_negotiates_with_the_hardened_sshd(fleet):
    """pyinfra's own client: what it agrees on is in sshd's lists."""
    client = paramiko.SSHClient()
    client.load_host_keys(fleet.cluster["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=fleet.ssh_port("web1"),
        username="deploy",
        key_filename=fleet.cluster["ssh_key"],
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        transport = client.get_transport()
        settings = sshd_settings(fleet, "web1")
        # Of the key exchanges sshd offers, paramiko knows curve25519-sha256@libssh.org.
        assert transport.local_cipher in settings["ciphers"].split(",")
        assert transport.remote_cipher in settings["ciphers"].split(",")
        assert transport.host_key_type == "ssh-ed25519"
        _, stdout, _ = client.exec_command("id -un")
        assert stdout.read().decode().strip() == "deploy"
    finally:
        client.close()


def test_a_configuration_that_would_lock_the_deploy_out_is_refused(fleet, tmp_path):
    inventory = copy_sandbox_inventory(tmp_path)
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "web.py").write_text(
        'hardening_ssh_allow_users = ["ops"]\n'
        'hardening_ssh_pubkey_algorithms = ["rsa-sha2-512"]\n'
        "hardening_ssh_port = 2222\n"
        'hardening_ssh_sources = ["198.51.100.0/24"]\n'
        'hardening_ssh_kex_algorithms = ["sntrup761x25519-sha512@openssh.com"]\n'
    )
    before = sshd_settings(fleet, "web1")
    run = pyinfra(str(inventory), "deploys/provision.py", "--limit", "web1")
    assert run.returncode != 0
    output = " ".join(run.output.split())
    assert "refusing to run, nothing was changed" in output
    assert "the deploy connects as 'deploy', which hardening_ssh_allow_users (ops)" in output
    assert "keys of type ssh-ed25519" in output
    assert "this run reaches sshd on port 22, but hardening_ssh_port is 2222" in output
    assert "outside hardening_ssh_sources (198.51.100.0/24)" in output
    assert "paramiko (pyinfra's SSH client) supports none of them" in output
    assert "Starting operation" not in run.output
    assert sshd_settings(fleet, "web1") == before


# -- 2. firewall -------------------------------------------------------------------------


def start_probe(fleet: World, host: str, port: int) -> None:
    fleet.sh(host, f"systemd-run --unit=probe-{port} python3 -m http.server {port}")
    wait_for(
        lambda: fleet.sh(host, f"ss -H -l -t -n 'sport = :{port}'")[1].strip(),
        timeout=20,
        what=f"probe on {host}:{port}",
    )


def container_can_connect(fleet: World, host: str, network: str, target_ip: str, port: int):
    """From a throwaway container on `host` (on `network`), open TCP to target:port."""
    code, output = fleet.sh(
        host,
        f"docker run --rm --network {network} --entrypoint bash {NGINX_IMAGE} -c "
        f"'timeout 3 bash -c \"exec 3<>/dev/tcp/{target_ip}/{port}\" && echo open || echo shut'",
    )
    assert output.strip().splitlines()[-1] in ("open", "shut"), output
    return output.strip().splitlines()[-1] == "open"


@pytest.fixture
def probes(on_v1):
    """Real listeners beside the provisioned ones: db1:8999 (in no matrix entry) and
    job1:9200 (the matrix opens it to web only)."""
    fleet = on_v1
    start_probe(fleet, "db1", 8999)
    start_probe(fleet, "job1", 9200)
    yield fleet
    fleet.sh("db1", "systemctl stop probe-8999")
    fleet.sh("job1", "systemctl stop probe-9200")


@pytest.mark.parametrize("network", ["deploykit-app", "bridge"])
def test_containers_reach_what_the_matrix_allows_their_host_and_nothing_else(probes, network):
    fleet = probes
    web1, db1, job1 = fleet.ip("web1"), fleet.ip("db1"), fleet.ip("job1")
    # Their own host's sshd: the host reaches it, its containers do not.
    assert fleet.sh("web1", f"timeout 3 bash -c 'exec 3<>/dev/tcp/{web1}/22'")[0] == 0
    assert not container_can_connect(fleet, "web1", network, web1, 22)
    # Other hosts, by the matrix: db1's PostgreSQL and job1's 9200 are open to web...
    assert container_can_connect(fleet, "web1", network, db1, 5432)
    assert container_can_connect(fleet, "web1", network, job1, 9200)
    # ...db1's probe to nobody, though it listens.
    assert not container_can_connect(fleet, "web1", network, db1, 8999)
    assert fleet.sh("db1", "timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8999'")[0] == 0


def test_a_burst_of_new_ssh_connections_from_one_source_is_cut(fleet):
    per_minute = HARDENING["hardening_firewall_ssh_new_per_minute"]
    attempts = 3 * per_minute
    code, output = fleet.sh(
        "lb1",
        "start=$(date +%s%N); "
        f"for i in $(seq {attempts}); do "
        f"(timeout 2 bash -c 'exec 3<>/dev/tcp/{fleet.ip('web2')}/22' && echo open) & "
        "done; wait; echo elapsed_ms=$((($(date +%s%N) - start) / 1000000))",
    )
    opened = output.split().count("open")
    elapsed_s = int(output.split("elapsed_ms=")[-1].split()[0]) / 1000
    # The burst allowance, plus what the limit lets through while the burst lasted.
    allowed = per_minute + per_minute * elapsed_s / 60 + 5
    assert 0 < opened <= allowed < attempts, (opened, attempts, elapsed_s)
    # Another source (the deploy's, through the published port) is not limited by it.
    result = fleet.ssh("web2", "true")
    assert result.returncode == 0, result.stdout


# -- 3. kernel and system ----------------------------------------------------------------


def test_kernel_parameters_are_set_where_the_host_can_and_reported_where_not(fleet):
    code, content = fleet.sh("web1", f"cat {SYSCTL_FILE}")
    assert code == 0
    for key, value in HARDENING["hardening_sysctl"].items():
        assert f"{key} = {value}\n" in content, key
    unsettable = []
    for key, value in HARDENING["hardening_sysctl"].items():
        path = "/proc/sys/" + key.replace(".", "/")
        code, output = fleet.sh("web1", f"test -w {path} && cat {path}")
        if code == 0:
            assert output.split() == [str(value)], key
        else:
            unsettable.append(key)
    # The host's own network namespace's keys took; what it cannot set is named.
    assert "net.ipv4.conf.all.rp_filter" not in unsettable
    assert "net.ipv4.conf.all.accept_redirects" not in unsettable
    run = pyinfra("inventories/sandbox.py", "deploys/provision.py", "--limit", "web1", "--dry")
    assert run.returncode == 0, run.failure_excerpt()
    report = " ".join(
        line for line in run.output.splitlines() if "not settable on this host" in line
    )
    for key in unsettable:
        if fleet.sh("web1", f"cat /proc/sys/{key.replace('.', '/')}")[1].split() != [
            str(HARDENING["hardening_sysctl"][key])
        ]:
            assert key in report, (key, report)


def test_unneeded_kernel_modules_are_never_loaded(fleet):
    code, content = fleet.sh("web1", "cat /etc/modprobe.d/60-deploykit-blacklist.conf")
    assert code == 0
    for module in ("dccp", "sctp", "rds", "tipc", "usb-storage", "firewire-core"):
        assert f"blacklist {module}\ninstall {module} /bin/false\n" in content


def test_core_dumps_are_off(fleet):
    result = fleet.ssh("web1", "ulimit -H -c; ulimit -S -c")
    assert result.stdout.split()[-2:] == ["0", "0"], result.stdout
    assert fleet.sh("web1", "systemctl show -p DefaultLimitCORE")[1].strip() == (
        "DefaultLimitCORE=0"
    )
    code, content = fleet.sh("web1", "systemd-analyze cat-config systemd/coredump.conf")
    assert "Storage=none" in content and "ProcessSizeMax=0" in content


def test_login_defs_and_legal_banners(fleet):
    _, defs = fleet.sh(
        "web1", "grep -E '^(UMASK|ENCRYPT_METHOD|SHA_CRYPT_M.._ROUNDS)' /etc/login.defs"
    )
    # Debian 13's login.defs has no UMASK line of its own: the kit appends one, so the
    # order of the lines differs between releases.
    assert dict(line.split() for line in defs.splitlines()) == {
        "UMASK": "027",
        "ENCRYPT_METHOD": "SHA512",
        "SHA_CRYPT_MIN_ROUNDS": "65536",
        "SHA_CRYPT_MAX_ROUNDS": "65536",
    }, defs
    for path in ("/etc/issue", "/etc/issue.net"):
        assert fleet.sh("web1", f"cat {path}")[1].strip() == HARDENING["hardening_banner"]


def test_apt_lists_restarts_and_upgrades_spare_the_roll(fleet):
    code, output = fleet.sh(
        "web1", "dpkg-query -W -f '${Package} ${Status}\\n' needrestart apt-listchanges debsums"
    )
    assert output.count("install ok installed") == 3, output
    _, needrestart = fleet.sh("web1", "cat /etc/needrestart/conf.d/60-deploykit.conf")
    assert "$nrconf{restart} = 'l';" in needrestart
    _, blacklist = fleet.sh("web1", "apt-config dump Unattended-Upgrade::Package-Blacklist")
    for package in ("docker.io", "containerd", "runc", "haproxy", "postgresql-"):
        assert f'"{package}";' in blacklist, blacklist


def test_a_host_without_the_security_suite_is_refused(fleet):
    listing = "/etc/apt/sources.list.d/debian-security.list"
    assert fleet.sh("job1", f"mv {listing} /root/security.list")[0] == 0
    try:
        run = pyinfra("inventories/sandbox.py", "deploys/provision.py", "--limit", "job1")
    finally:
        fleet.sh("job1", f"mv /root/security.list {listing}")
    assert run.returncode != 0
    assert "host job1: apt's sources have no security suite" in " ".join(run.output.split())
    assert "Starting operation" not in run.output


# -- 5. Docker ---------------------------------------------------------------------------


def inspect(fleet: World, host: str, role: str, template: str) -> str:
    code, output = fleet.sh(
        host,
        f"docker inspect -f '{template}' "
        f"$(docker ps -q --filter label=io.deploykit.role={role})",
    )
    assert code == 0, output
    return output.strip()


def test_the_running_pair_is_confined(on_v1):
    fleet = on_v1
    for host in fleet.hosts("web"):
        assert inspect(fleet, host, "app", "{{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}}") == (
            "[ALL] []"
        )
        assert inspect(fleet, host, "nginx", "{{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}}") == (
            "[ALL] [CHOWN SETUID SETGID NET_BIND_SERVICE]"
        )
        for role in ("app", "nginx"):
            assert inspect(fleet, host, role, "{{.HostConfig.ReadonlyRootfs}}") == "true"
            code, status = fleet.sh(
                host,
                f"docker exec $(docker ps -q --filter label=io.deploykit.role={role}) "
                "grep -E '^(NoNewPrivs|CapEff)' /proc/1/status",
            )
            assert "NoNewPrivs:\t1" in status, (host, role, status)
            code, output = fleet.sh(
                host,
                f"docker exec $(docker ps -q --filter label=io.deploykit.role={role}) "
                "touch /probe-write",
            )
            assert code != 0 and "Read-only file system" in output
        _, app_status = fleet.sh(
            host,
            "docker exec $(docker ps -q --filter label=io.deploykit.role=app) "
            "grep CapEff /proc/1/status",
        )
        assert app_status.split() == ["CapEff:", "0000000000000000"]


def test_docker_daemon_isolates_the_default_bridge_and_keeps_containers_alive(on_v1):
    fleet = on_v1
    assert DOCKER["docker_icc"] is False
    _, info = fleet.sh("web1", "docker info -f '{{.LiveRestoreEnabled}}'")
    assert info.strip() == "true"
    name = f"icc-probe-{uuid.uuid4().hex[:8]}"
    code, output = fleet.sh(
        "web1", f"docker run -d --name {name} --entrypoint python3 {APP_IMAGE} -m http.server 8000"
    )
    assert code == 0, output
    try:
        _, address = fleet.sh(
            "web1", f"docker inspect -f '{{{{.NetworkSettings.IPAddress}}}}' {name}"
        )
        wait_for(
            lambda: fleet.sh("web1", f"curl -s -o /dev/null -m 2 http://{address.strip()}:8000/")[0]
            == 0,
            timeout=30,
            what="the probe container to listen",
        )
        assert not container_can_connect(fleet, "web1", "bridge", address.strip(), 8000)
        _, core = fleet.sh("web1", f"docker exec {name} sh -c 'ulimit -H -c'")
        assert core.strip() == "0"
    finally:
        fleet.sh("web1", f"docker rm -f {name}")


# -- 4. audit trail ----------------------------------------------------------------------


def remote_log(fleet: World, sender: str, program: str) -> str:
    return fleet.sh("db1", f"cat {REMOTE_LOGS}/{sender}/{program}.log 2>/dev/null")[1]


def test_kernel_audit_runs_where_the_kernel_allows_it_and_is_reported_where_not(fleet):
    _, rules = fleet.sh("web1", "cat /etc/audit/rules.d/60-deploykit.rules")
    assert "-F path=/usr/bin/sudo -F perm=x -F key=deploykit-sudo" in rules
    for path in ("/etc/ssh/sshd_config", "/etc/sudoers.d", "/etc/docker", "/etc/deploykit"):
        assert f"-w {path} -p wa -k deploykit-config" in rules
    _, plugin = fleet.sh("web1", "cat /etc/audit/plugins.d/syslog.conf")
    assert "active = yes" in plugin
    kernel_allows = fleet.sh("web1", "auditctl -s")[0] == 0
    active = fleet.sh("web1", "systemctl is-active auditd")[1].strip()
    if kernel_allows:
        assert active == "active"
        assert "deploykit-sudo" in fleet.sh("web1", "auditctl -l")[1]
    else:
        # A container: the kernel is the machine's. auditd is not left failing.
        assert active == "inactive"
        assert fleet.sh("web1", "systemctl is-enabled auditd")[1].strip() == "disabled"


def test_sudo_and_an_sshd_config_change_reach_the_audit_trail_and_the_log_host(fleet):
    marker = f"audit-{uuid.uuid4().hex[:12]}"
    assert fleet.ssh("web1", f"sudo -n /bin/echo {marker}").returncode == 0
    code, config = fleet.sh("web1", "cat /etc/ssh/sshd_config")
    changed = config + f"# {marker}\n"
    digest = hashlib.sha256(changed.encode()).hexdigest()[:16]
    assert fleet.sh("web1", f"echo '# {marker}' >> /etc/ssh/sshd_config")[0] == 0
    try:
        wait_for(
            lambda: marker in fleet.sh("web1", "grep sudo /var/log/auth.log")[1],
            timeout=30,
            what="sudo's line in web1's auth.log",
        )
        wait_for(
            lambda: digest in fleet.sh("web1", "grep deploykit-changes /var/log/auth.log")[1],
            timeout=30,
            what="the sshd_config change in web1's auth.log",
        )
        wait_for(
            lambda: marker in remote_log(fleet, "web1", "sudo"),
            timeout=60,
            what="sudo's line on the log host",
        )
        wait_for(
            lambda: "changed /etc/ssh/sshd_config" in remote_log(fleet, "web1", "deploykit-changes")
            and digest in remote_log(fleet, "web1", "deploykit-changes"),
            timeout=60,
            what="the sshd_config change on the log host",
        )
    finally:
        fleet.sh("web1", f"sed -i '/# {marker}/d' /etc/ssh/sshd_config")


def test_a_burst_of_changes_keeps_the_change_watch_running_and_logs_the_last(fleet):
    # A provision writes many watched files in a few seconds. systemd's default start
    # limit (5 starts in 10 s) used to fail the path unit on such a burst, and from then
    # on no change was logged, and the next provision was not a no-op.
    marker = f"burst-{uuid.uuid4().hex[:12]}"
    path = f"/etc/deploykit/{marker}"
    last = 15
    digest = hashlib.sha256(f"{last}\n".encode()).hexdigest()[:16]
    try:
        code, out = fleet.sh(
            "web1", f"for i in $(seq {last}); do echo $i > {path}; sleep 0.3; done"
        )
        assert code == 0, out
        logged = f"grep deploykit-changes /var/log/auth.log | grep -F {path}"
        wait_for(
            lambda: fleet.sh("web1", logged)[1].rstrip().endswith(f"sha256 {digest})"),
            timeout=30,
            what="the burst's last change in web1's auth.log",
        )
        state = fleet.sh("web1", "systemctl is-active deploykit-change-watch.path")[1]
        assert state.strip() == "active"
    finally:
        fleet.sh("web1", f"rm -f {path}")


def test_the_log_host_files_lines_by_sender_address_not_claimed_name(fleet):
    marker = f"claimed-{uuid.uuid4().hex[:12]}"
    fake = f"evil{uuid.uuid4().hex[:6]}"
    # lb1 claims another name: rsyslog takes the hostname when it starts.
    assert fleet.sh("lb1", f"hostname {fake} && systemctl restart rsyslog")[0] == 0
    try:
        assert fleet.sh("lb1", f"logger -t deploykit-probe {marker}")[0] == 0
        wait_for(
            lambda: marker in remote_log(fleet, "lb1", "deploykit-probe"),
            timeout=60,
            what="the line filed under lb1",
        )
        assert f"{fake} deploykit-probe: {marker}" in remote_log(fleet, "lb1", "deploykit-probe")
        assert fleet.sh("db1", f"test -e {REMOTE_LOGS}/{fake}")[0] != 0
    finally:
        fleet.sh("lb1", "hostname lb1 && systemctl restart rsyslog")


def test_the_deploys_audit_log_reaches_the_log_host(on_v1):
    fleet = on_v1
    _, last = fleet.sh("lb1", "tail -n 1 /var/log/deploykit/audit.log")
    assert last.strip()
    wait_for(
        lambda: last.strip() in remote_log(fleet, "lb1", "deploykit-audit"),
        timeout=60,
        what="the audit line on the log host",
    )
