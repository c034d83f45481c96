"""Hardening: sshd, a default-deny firewall, kernel and system settings, an audit trail.

- **sshd** offers only modern key exchange, ciphers and encrypt-then-MAC SHA-2 MACs
  (each list cut down to what the host's OpenSSH offers), an ed25519 host key, and
  lets in only the deploy user, by key. Before any host is touched, a configuration
  that would lock the deploy out (user not allowed, key type refused, port moved or
  closed to this run, nothing paramiko can negotiate) is refused.
- **The firewall** lives in an nftables table of its own (``inet deploykit_firewall``)
  and replaces only that table: Debian's stock ``/etc/nftables.conf`` begins with
  ``flush ruleset``, which would also wipe the NAT rules of the host's Docker engine
  (published ports, embedded DNS). A oneshot unit loads it at boot, before the network
  and Docker; a change is one `nft -f` transaction (a reload), never a stop and start.
- **Kernel and system**: sysctls (the ones the host cannot set, such as kernel-wide keys
  inside a container, are reported by name), modules never needed blacklisted, no core
  dumps, login.defs, a legal banner.
- **Audit trail**: auditd with rules for sudo and the files that grant power (its records
  go to syslog, so to the log host), where the kernel lets the host load them; and,
  everywhere, a watch on those files that logs each change to syslog (tag
  ``deploykit-changes``), which works inside containers too.
"""

from __future__ import annotations

from types import SimpleNamespace

from paramiko import PKey
from pyinfra import host, inventory, logger
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from ..config import knob
from ..errors import refuse
from ..firewall import accept_from, firewall_rules_for, split_families
from ..hardening_facts import KernelAudit, OpenSshOffers, SshConnection, UnitStates
from ..operations.config_file import config_file, render_template
from ..operations.hardening import sysctl_values, unsettable_sysctls
from ..ssh_policy import (
    ALL_HOST_KEY_TYPES,
    HOST_KEY_FILE,
    SshPolicyError,
    choose,
    host_key_algorithms,
    lockout_problems,
    paramiko_offers,
    paramiko_problems,
    rejected_keys,
)
from .bootstrap import authorized_keys

DEFAULTS = {
    # The only account sshd lets in; bootstrap creates it.
    "hardening_ssh_allow_users": ["deploy"],
    # Where SSH is accepted from: "any", or CIDRs such as "198.51.100.0/24".
    "hardening_ssh_sources": ["any"],
    # The port sshd listens on and the firewall opens (to hardening_ssh_sources).
    "hardening_ssh_port": 22,
    # Algorithms sshd offers, in order of preference; each list is cut down to what the
    # host's OpenSSH has (mlkem768x25519 from OpenSSH 9.9, Debian 13). An empty list
    # leaves OpenSSH's own default. curve25519-sha256@libssh.org is curve25519-sha256
    # under its older name, the one paramiko (pyinfra's SSH client) knows.
    "hardening_ssh_kex_algorithms": [
        "mlkem768x25519-sha256",
        "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
    ],
    "hardening_ssh_ciphers": [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-ctr",
        "aes128-ctr",
    ],
    # Encrypt-then-MAC SHA-2 only.
    "hardening_ssh_macs": ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"],
    # Host keys sshd uses: "ed25519", "rsa" (3072 bits or more), "ecdsa". The others'
    # key files are removed.
    "hardening_ssh_host_key_types": ["ed25519"],
    # Signature algorithms accepted for users' keys (RSA keys of 3072 bits or more).
    "hardening_ssh_pubkey_algorithms": [
        "ssh-ed25519",
        "sk-ssh-ed25519@openssh.com",
        "rsa-sha2-512",
        "rsa-sha2-256",
    ],
    # Failed keys offered per connection before sshd drops it.
    "hardening_ssh_max_auth_tries": 3,
    # Sessions (channels) one connection may open at once: pyinfra runs several.
    "hardening_ssh_max_sessions": 10,
    # A silent client is dropped after interval x count seconds.
    "hardening_ssh_client_alive_interval_s": 60,
    "hardening_ssh_client_alive_count_max": 3,
    # Legal notice shown before SSH login (/etc/issue.net) and on consoles (/etc/issue);
    # "" leaves both files as they are and shows no banner.
    "hardening_banner": (
        "Authorized access only. Activity on this system is monitored and logged; "
        "disconnect now if you are not authorized."
    ),
    # Extra `docker run` flags of the app container (a roll starts it with them): no
    # capabilities at all, a read-only root file system, a private /tmp. [] for none.
    "hardening_app_run_flags": [
        "--cap-drop=ALL",
        "--read-only",
        "--tmpfs=/tmp:rw,nosuid,nodev,noexec,size=64m",
    ],
    # ...and of the nginx sidecar: its master binds port 80, then drops to www-data; it
    # writes only its rendered config, pid file, temporary files and logs (tmpfs).
    "hardening_nginx_run_flags": [
        "--cap-drop=ALL",
        "--cap-add=CHOWN",
        "--cap-add=SETUID",
        "--cap-add=SETGID",
        "--cap-add=NET_BIND_SERVICE",
        "--read-only",
        "--tmpfs=/etc/nginx/conf.d:rw,nosuid,nodev,noexec,size=1m",
        "--tmpfs=/run:rw,nosuid,nodev,noexec,size=1m",
        "--tmpfs=/var/lib/nginx:rw,nosuid,nodev,noexec,size=64m",
        "--tmpfs=/var/log/nginx:rw,nosuid,nodev,noexec,size=16m",
        "--tmpfs=/tmp:rw,nosuid,nodev,noexec,size=16m",
    ],
    # Role -> {"port/proto": [source roles or "any" or CIDRs]}: who may reach what.
    # A host gets the rules of every group it is in. Ports published by containers
    # (nginx on web hosts) are filtered the same way. A host's own containers reach
    # only the ports whose sources name one of the host's groups.
    "hardening_firewall_matrix": {},
    # Turn the firewall off (for example where a cloud security group does the job).
    "hardening_firewall_enabled": True,
    # New SSH connections per minute one source address may open (as a burst too);
    # beyond it they are dropped. 0: no limit.
    "hardening_firewall_ssh_new_per_minute": 60,
    # Log dropped packets (at most 10 lines a minute per chain) to the kernel log.
    "hardening_firewall_log_drops": True,
    # Kernel parameters, set now and at every boot ({} sets none). Docker keeps working:
    # IP forwarding is left alone. Keys a host cannot set (inside a container, the
    # kernel-wide ones) are reported by each run, never counted as done.
    "hardening_sysctl": {
        "kernel.kptr_restrict": 2,
        "kernel.dmesg_restrict": 1,
        "kernel.unprivileged_bpf_disabled": 1,
        "net.core.bpf_jit_harden": 2,
        "fs.protected_fifos": 2,
        "fs.protected_regular": 2,
        "fs.protected_symlinks": 1,
        "fs.protected_hardlinks": 1,
        "fs.suid_dumpable": 0,
        "net.ipv4.conf.all.rp_filter": 1,
        "net.ipv4.conf.default.rp_filter": 1,
        "net.ipv4.conf.all.accept_redirects": 0,
        "net.ipv4.conf.default.accept_redirects": 0,
        "net.ipv4.conf.all.secure_redirects": 0,
        "net.ipv4.conf.default.secure_redirects": 0,
        "net.ipv4.conf.all.send_redirects": 0,
        "net.ipv4.conf.default.send_redirects": 0,
        "net.ipv4.conf.all.accept_source_route": 0,
        "net.ipv4.conf.default.accept_source_route": 0,
        "net.ipv4.conf.all.log_martians": 1,
        "net.ipv4.conf.default.log_martians": 1,
        "net.ipv4.icmp_echo_ignore_broadcasts": 1,
        "net.ipv4.icmp_ignore_bogus_error_responses": 1,
        "net.ipv4.tcp_syncookies": 1,
        "net.ipv6.conf.all.accept_redirects": 0,
        "net.ipv6.conf.default.accept_redirects": 0,
        "net.ipv6.conf.all.accept_source_route": 0,
        "net.ipv6.conf.default.accept_source_route": 0,
    },
    # Kernel modules these hosts never need: never loaded, even on request ([] none).
    "hardening_blacklisted_modules": [
        "dccp",
        "sctp",
        "rds",
        "tipc",
        "usb-storage",
        "firewire-core",
    ],
    # Allow core dumps (they can hold secrets from memory); False turns them off for
    # logins, services and systemd-coredump.
    "hardening_core_dumps": False,
    # /etc/login.defs: umask of new files and home folders, and SHA-512 rounds for
    # passwords set by chpasswd/newusers ("" / 0 leave the distribution's value).
    "hardening_login_umask": "027",
    "hardening_password_sha_rounds": 65536,
    # auditd rules for sudo and the files that grant power, and a change log of those
    # files in syslog (tag deploykit-changes); both reach the log host.
    "hardening_audit_enabled": True,
    # Further files or folders to audit for changes (absolute paths).
    "hardening_audit_paths": [],
}

FIREWALL_FILE = "/etc/deploykit/firewall.nft"
FIREWALL_UNIT = "deploykit-firewall.service"
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/10-deploykit-hardening.conf"
SYSCTL_FILE = "/etc/sysctl.d/60-deploykit-hardening.conf"
MODPROBE_FILE = "/etc/modprobe.d/60-deploykit-blacklist.conf"
AUDIT_RULES_FILE = "/etc/audit/rules.d/60-deploykit.rules"
# auditd, and the unit that loads the rules into the kernel (Debian 13 on).
AUDIT_UNITS = ("auditd.service", "audit-rules.service")
CHANGE_WATCH_SCRIPT = "/usr/local/sbin/deploykit-change-watch"
CHANGE_WATCH_UNIT = "deploykit-change-watch"
# Files and folders that grant power over a host: audited, and watched for changes.
AUDITED_PATHS = [
    "/etc/ssh/sshd_config",
    "/etc/ssh/sshd_config.d",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/docker",
    "/etc/deploykit",
]


@deploy("Hardening", data_defaults=DEFAULTS)
def hardening() -> None:
    ssh_settings = checked_ssh_settings()
    sshd(ssh_settings)
    if host.data.hardening_firewall_enabled:
        firewall()
    kernel_and_system()
    if host.data.hardening_audit_enabled:
        audit_trail()


# -- SSH ---------------------------------------------------------------------------------


def checked_ssh_settings() -> dict:
    """The sshd template's data, after refusing (while planning, before any host is
    touched) a configuration that would lock the deploy out of this host."""
    data = host.data
    offers = host.get_fact(OpenSshOffers)
    wanted = {
        "KexAlgorithms": list(data.hardening_ssh_kex_algorithms),
        "Ciphers": list(data.hardening_ssh_ciphers),
        "MACs": list(data.hardening_ssh_macs),
        "HostKeyAlgorithms": [],
        "PubkeyAcceptedAlgorithms": list(data.hardening_ssh_pubkey_algorithms),
    }
    try:
        wanted["HostKeyAlgorithms"] = host_key_algorithms(list(data.hardening_ssh_host_key_types))
        chosen = choose(wanted, offers)
    except SshPolicyError as error:
        refuse([f"host {host.name}: {error}"])
    problems = paramiko_problems(chosen, paramiko_offers())
    problems += lockout_problems(
        user=data.get("ssh_user") or "root",
        allow_users=list(data.hardening_ssh_allow_users),
        rejected_key_types=rejected_keys(
            deploy_public_keys(), chosen.get("PubkeyAcceptedAlgorithms")
        ),
        connection=host.get_fact(SshConnection, _sudo=False),
        port=int(data.hardening_ssh_port),
        firewall_enabled=bool(data.hardening_firewall_enabled),
        ssh_sources=list(data.hardening_ssh_sources),
    )
    if problems:
        refuse([f"host {host.name}: {problem}" for problem in problems])
    version = max(offers.get("version") or {"0.0"})
    major, _, minor = version.partition(".")
    return {
        "port": int(data.hardening_ssh_port),
        "allow_users": data.hardening_ssh_allow_users,
        "max_auth_tries": int(data.hardening_ssh_max_auth_tries),
        "max_sessions": int(data.hardening_ssh_max_sessions),
        "client_alive_interval": int(data.hardening_ssh_client_alive_interval_s),
        "client_alive_count_max": int(data.hardening_ssh_client_alive_count_max),
        "banner": "/etc/issue.net" if data.hardening_banner else "",
        "host_keys": [HOST_KEY_FILE.format(t) for t in data.hardening_ssh_host_key_types],
        # RequiredRSASize is OpenSSH 9.1's: older versions refuse the keyword.
        "required_rsa_size": (int(major or 0), int(minor or 0)) >= (9, 1),
        "algorithms": chosen.lists,
    }


def deploy_public_keys() -> list[str]:
    """The keys bootstrap gives the deploy user, and this run's own key."""
    settings = SimpleNamespace(
        bootstrap_authorized_keys_dir=knob(host.data, "bootstrap_authorized_keys_dir"),
        bootstrap_extra_public_key_files=knob(host.data, "bootstrap_extra_public_key_files"),
    )
    try:
        keys = authorized_keys(settings)
    except (OSError, ValueError):
        keys = []  # bootstrap refuses that on its own
    connection_key = host.data.get("ssh_key")
    if connection_key:
        try:
            keys.append(PKey.from_path(connection_key).get_name() + " this-run")
        except Exception:  # noqa: BLE001 - encrypted or unreadable: bootstrap's keys decide
            pass
    return keys


def sshd(settings: dict) -> None:
    if host.data.hardening_banner:
        for path in ("/etc/issue", "/etc/issue.net"):
            config_file(
                name=f"Ensure {path} shows the legal banner",
                content=host.data.hardening_banner.rstrip("\n") + "\n",
                dest=path,
            )
    drop_in = config_file(
        name="Ensure sshd offers only strong algorithms and lets in the deploy user, by key",
        content=render_template("sshd_hardening.conf.j2", **settings),
        dest=SSHD_DROP_IN,
        mode=0o644,
        validate="/usr/sbin/sshd -t -f {path}",
    )
    systemd.service(
        name="Ensure sshd runs with the hardened configuration",
        service="ssh.service",
        running=True,
        enabled=True,
        reloaded=drop_in.will_change,
    )
    for key_type in ALL_HOST_KEY_TYPES:
        if key_type in host.data.hardening_ssh_host_key_types:
            continue
        for path in (HOST_KEY_FILE.format(key_type), HOST_KEY_FILE.format(key_type) + ".pub"):
            files.file(name=f"Ensure sshd has no {key_type} host key", path=path, present=False)


# -- firewall ----------------------------------------------------------------------------


def firewall() -> None:
    data = host.data
    apt.packages(name="Ensure nftables is installed", packages=["nftables"], no_recommends=True)
    rules = firewall_rules_for(host, inventory, data.hardening_firewall_matrix)
    ssh_v4, ssh_v6 = split_families([s for s in data.hardening_ssh_sources if s != "any"])
    if "any" in data.hardening_ssh_sources:
        ssh_v4, ssh_v6 = (), ()
    ruleset = config_file(
        name="Ensure the firewall rules are current",
        content=render_template(
            "firewall.nft.j2",
            rules=rules,
            ssh_port=int(data.hardening_ssh_port),
            ssh_sources_v4=list(ssh_v4),
            ssh_sources_v6=list(ssh_v6),
            ssh_new_per_minute=int(data.hardening_firewall_ssh_new_per_minute),
            ssh_burst=int(data.hardening_firewall_ssh_new_per_minute),
            log_drops=bool(data.hardening_firewall_log_drops),
            accept_from=accept_from,
        ),
        dest=FIREWALL_FILE,
        mode=0o600,
        validate="/usr/sbin/nft -c -f {path}",
    )
    unit = config_file(
        name="Ensure the firewall unit loads the rules at boot",
        content=render_template("deploykit-firewall.service.j2", firewall_file=FIREWALL_FILE),
        dest=f"/etc/systemd/system/{FIREWALL_UNIT}",
    )
    # A reload loads the new file as one transaction: a restart would delete the table
    # (ExecStop) before loading it again, leaving a moment without filtering.
    systemd.service(
        name="Ensure the firewall is active and enabled at boot",
        service=FIREWALL_UNIT,
        running=True,
        enabled=True,
        daemon_reload=unit.will_change,
        reloaded=ruleset.will_change or unit.will_change,
    )


# -- kernel and system -------------------------------------------------------------------


def kernel_and_system() -> None:
    data = host.data
    if data.hardening_sysctl:
        config_file(
            name="Ensure the kernel parameters are set at every boot",
            content=render_template("sysctl-hardening.conf.j2", values=data.hardening_sysctl),
            dest=SYSCTL_FILE,
        )
        unsettable = unsettable_sysctls(dict(data.hardening_sysctl))
        if unsettable:
            listing = ", ".join(f"{key} ({why})" for key, why in unsettable.items())
            host.log(
                f"deploykit: not settable on this host, left as they are: {listing}; "
                f"{SYSCTL_FILE} sets them at boot where the kernel is this host's own",
                logger.warning,
            )
        sysctl_values(
            name="Ensure the kernel runs with the hardened parameters now",
            values=dict(data.hardening_sysctl),
        )
    if data.hardening_blacklisted_modules:
        config_file(
            name="Ensure kernel modules these hosts never need are never loaded",
            content=render_template(
                "modprobe-blacklist.conf.j2", modules=data.hardening_blacklisted_modules
            ),
            dest=MODPROBE_FILE,
        )
    if not data.hardening_core_dumps:
        no_core_dumps()
    if data.hardening_login_umask:
        files.line(
            name=f"Ensure login.defs sets UMASK {data.hardening_login_umask}",
            path="/etc/login.defs",
            line=r"^UMASK\s",
            replace=f"UMASK\t\t{data.hardening_login_umask}",
        )
    if data.hardening_password_sha_rounds:
        files.line(
            name="Ensure passwords are hashed with SHA-512",
            path="/etc/login.defs",
            line=r"^ENCRYPT_METHOD\s",
            replace="ENCRYPT_METHOD SHA512",
        )
        for bound in ("MIN", "MAX"):
            files.line(
                name=f"Ensure login.defs sets SHA_CRYPT_{bound}_ROUNDS",
                path="/etc/login.defs",
                line=rf"^#?\s*SHA_CRYPT_{bound}_ROUNDS\s+[0-9]+$",
                extended_regex=True,
                replace=f"SHA_CRYPT_{bound}_ROUNDS {int(data.hardening_password_sha_rounds)}",
            )


def no_core_dumps() -> None:
    config_file(
        name="Ensure logins may not dump core",
        content="# Managed by deploykit (hardening_core_dumps).\n* hard core 0\n* soft core 0\n",
        dest="/etc/security/limits.d/60-deploykit-no-core.conf",
    )
    config_file(
        name="Ensure systemd-coredump keeps no dumps",
        content=(
            "# Managed by deploykit (hardening_core_dumps).\n"
            "[Coredump]\nStorage=none\nProcessSizeMax=0\n"
        ),
        dest="/etc/systemd/coredump.conf.d/60-deploykit.conf",
    )
    manager = config_file(
        name="Ensure services may not dump core",
        content=("# Managed by deploykit (hardening_core_dumps).\n[Manager]\nDefaultLimitCORE=0\n"),
        dest="/etc/systemd/system.conf.d/60-deploykit-no-core.conf",
    )
    # systemd reads its own settings only when it starts or re-executes.
    server.shell(
        name="Ensure systemd applies its new defaults",
        commands=["systemctl daemon-reexec"],
        _if=manager.did_change,
    )


# -- audit trail -------------------------------------------------------------------------


def audited_paths() -> list[str]:
    data = host.data
    paths = list(AUDITED_PATHS) + list(data.hardening_audit_paths)
    if "lb" in host.groups:  # the deploy lock and audit log live on the first one
        paths.append(knob(data, "deploy_lock_file").rsplit("/", 1)[0])
    return sorted(set(paths))


def audit_trail() -> None:
    paths = audited_paths()
    audit_available = host.get_fact(KernelAudit)
    apt.packages(name="Ensure auditd is installed", packages=["auditd"], no_recommends=True)
    rules = config_file(
        name="Ensure the audit rules watch sudo and the files that grant power",
        content=render_template("audit-deploykit.rules.j2", paths=paths),
        dest=AUDIT_RULES_FILE,
        mode=0o640,
    )
    plugin = config_file(
        name="Ensure auditd sends its records to syslog (and so to the log host)",
        content=render_template("audisp-syslog.conf.j2"),
        dest="/etc/audit/plugins.d/syslog.conf",
        mode=0o640,
    )
    kernel_audit(audit_available, rules, plugin)
    script = config_file(
        name="Ensure the change watch script is current",
        content=render_template("deploykit-change-watch.sh.j2", paths=paths),
        dest=CHANGE_WATCH_SCRIPT,
        mode=0o755,
    )
    units = [
        config_file(
            name=f"Ensure the change watch's {kind} unit is current",
            content=render_template(
                f"deploykit-change-watch.{kind}.j2", paths=paths, script=CHANGE_WATCH_SCRIPT
            ),
            dest=f"/etc/systemd/system/{CHANGE_WATCH_UNIT}.{kind}",
        )
        for kind in ("service", "path")
    ]
    changed = script.will_change or any(unit.will_change for unit in units)
    systemd.service(
        name="Ensure changes to the files that grant power are logged",
        service=f"{CHANGE_WATCH_UNIT}.path",
        running=True,
        enabled=True,
        daemon_reload=changed,
        restarted=changed,
    )


def kernel_audit(available: bool | None, rules, plugin) -> None:
    """auditd and its rules in the kernel, where the kernel lets this host load them.
    A container may not (audit belongs to the machine's kernel, shared by all): there
    auditd stays stopped and every run says so, instead of failing or pretending."""
    if available is False:
        host.log(
            "deploykit: the kernel refuses audit rules from this host (a container sharing "
            f"the machine's kernel): {AUDIT_RULES_FILE} is installed but not loaded, "
            "auditd stays stopped; the change log (deploykit-changes) and sudo's own log "
            "lines are this host's audit trail",
            logger.warning,
        )
        # Debian 13 loads the rules with a unit of its own, which fails here as well
        # (and leaves the host "degraded"): both stay off, and no failure stays listed.
        for unit, (file_state, active_state) in host.get_fact(
            UnitStates, units=AUDIT_UNITS
        ).items():
            systemd.service(
                name=f"Ensure {unit} is stopped where the kernel refuses audit",
                service=unit,
                running=False,
                enabled=False if file_state in ("enabled", "disabled") else None,
            )
            if active_state == "failed":
                server.shell(
                    name=f"Ensure {unit} is not listed as failed",
                    commands=[f"systemctl reset-failed {unit}"],
                )
    elif available is True:
        systemd.service(
            name="Ensure auditd is running", service="auditd.service", running=True, enabled=True
        )
        server.shell(
            name="Ensure the kernel has the current audit rules",
            commands=["augenrules --load"],
            _if=rules.did_change,
        )
        server.shell(
            name="Ensure auditd uses its current plugins",
            commands=["systemctl kill --signal=HUP auditd.service"],
            _if=plugin.did_change,
        )
    else:
        # auditd arrives in this run: whether the kernel accepts it shows only now.
        server.shell(
            name="Ensure auditd runs with the kit's rules, where the kernel lets it",
            commands=[
                "if auditctl -s >/dev/null 2>&1; then "
                "systemctl enable --now auditd.service && augenrules --load; "
                "else echo 'deploykit: the kernel refuses audit rules from this host'; "
                "systemctl disable --now auditd.service; "
                "systemctl disable --now audit-rules.service 2>/dev/null; "
                "systemctl reset-failed auditd.service audit-rules.service 2>/dev/null; "
                "true; fi"
            ],
        )
