"""HAProxy on the lb group: TLS termination, health-checked web servers, a runtime API.

Reloads are hitless (master-worker, listening sockets handed over) and keep each
server's runtime state: a drained server stays drained across a reload, because the
unit dumps `show servers state` to the state file right before every reload and stop,
and the configuration loads it back. The same script marks the reload until the new
worker answers, so the kit's state changes wait for it instead of being lost
(deploykit/commands/haproxy.py, change_server_state).
"""

from __future__ import annotations

import shlex

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from ..commands.haproxy import RELOAD_MARKER
from ..errors import refuse
from ..operations.config_file import config_file, render_template
from ..paths import REPO_ROOT
from ..secrets import PRIVATE_KEY, SecretsError, read_private_key_file

DEFAULTS = {
    # Name of the backend listing every web host; the rolling deploy drives its servers.
    "haproxy_backend": "web",
    # Port nginx publishes on each web host.
    "haproxy_web_port": 80,
    # The app's readiness path, checked through nginx.
    "haproxy_health_path": "/up",
    # Health check timing (ms): interval, interval while changing state; a server is UP
    # after `rise` passed checks in a row. The interval also bounds how long a check may
    # take to connect, TLS handshake included (HAProxy uses min(timeout connect, inter)):
    # at 1 s, a loaded but healthy host missed checks, and a stall of a busy machine
    # marked every server DOWN at once.
    "haproxy_check_inter_ms": 2000,
    "haproxy_check_fastinter_ms": 250,
    "haproxy_check_rise": 2,
    # A server is DOWN after this many failed checks in a row (after the first, checks
    # run at the fast interval). A dead host's requests meanwhile go to another server
    # (haproxy_retry_on).
    "haproxy_check_fall": 3,
    # How long a check may wait for its answer once connected (ms).
    "haproxy_check_timeout_ms": 2000,
    # Attempts per request; with redispatch a retry goes to another server.
    "haproxy_retries": 3,
    # What makes HAProxy replay an idempotent request (GET, HEAD, OPTIONS) on another
    # server: a server that fails or dies mid-request, or answers 5xx, costs no user a
    # failed request while a healthy server remains.
    "haproxy_retry_on": "conn-failure empty-response response-timeout 500 502 503 504",
    # Timeouts (ms).
    "haproxy_timeout_connect_ms": 3000,
    "haproxy_timeout_client_ms": 60000,
    "haproxy_timeout_server_ms": 60000,
    # PEM file (certificate + key) relative to the repository; "" serves HTTP only.
    "haproxy_tls_certificate": "files/tls/haproxy.pem",
    # Answer plain HTTP with a redirect to HTTPS.
    "haproxy_redirect_https": False,
    # The admin runtime API: a unix socket only, never a network port.
    "haproxy_admin_socket": "/run/haproxy/admin.sock",
    # Where server states are saved across reloads and restarts.
    "haproxy_server_state_file": "/var/lib/haproxy/server-state",
    # HAProxy reaches nginx on the web hosts over TLS and requires a certificate signed by
    # haproxy_backend_ca, health checks included (False: plain HTTP on haproxy_web_port).
    "haproxy_backend_tls": True,
    # Port nginx serves TLS on, on each web host (beside plain HTTP on haproxy_web_port).
    "haproxy_backend_tls_port": 443,
    # The fleet's own CA (PEM certificate, repository path) that signed the web hosts'
    # certificate; HAProxy trusts no other for them.
    "haproxy_backend_ca": "files/tls/fleet-ca.crt",
    # The web hosts' certificate and key (repository paths; keep the key in git-crypt).
    "haproxy_backend_certificate": "files/tls/web.crt",
    "haproxy_backend_key": "files/tls/web.key",
    # Where each web host keeps them (tls.crt, tls.key), mounted read-only into nginx.
    "haproxy_backend_tls_dir": "/etc/deploykit/tls",
}

CERTIFICATE_PATH = "/etc/haproxy/certs/site.pem"
BACKEND_CA_PATH = "/etc/haproxy/certs/backend-ca.crt"
STATE_SCRIPT = "/usr/local/sbin/deploykit-haproxy-state"
# How long a reload or a start may take to bring up a worker that answers.
NEW_WORKER_WAIT_S = 30
# Every server's address, port and TLS as configured, which the saved state must carry.
SERVERS_FILE = "/etc/haproxy/deploykit-servers"


def web_servers(backend_port: int) -> list[dict]:
    """Every web host, in inventory order, by its private address."""
    return [
        {"name": web.name, "address": web.data.get("private_ip") or web.name, "port": backend_port}
        for web in inventory.get_group("web")
    ]


@deploy("HAProxy load balancer", data_defaults=DEFAULTS)
def haproxy() -> None:
    data = host.data
    apt.packages(
        name="Ensure HAProxy and socat (runtime API client) are installed",
        packages=["haproxy", "socat"],
        no_recommends=True,
    )
    certificate = None
    if data.haproxy_tls_certificate:
        pem = _read_pem(data.haproxy_tls_certificate)
        certificate = config_file(
            name="Ensure the TLS certificate is installed",
            content=pem,
            dest=CERTIFICATE_PATH,
            mode=0o600,
            secrets=[_private_key_block(pem)],
        )
    backend_ca = None
    if data.haproxy_backend_tls:
        backend_ca = config_file(
            name="Ensure the CA the web hosts' certificates must come from is installed",
            content=read_repository_file(data, "haproxy_backend_ca"),
            dest=BACKEND_CA_PATH,
        )
    servers = web_servers(data.haproxy_backend_tls_port if backend_ca else data.haproxy_web_port)
    servers_file = config_file(
        name="Ensure the list of servers as configured is current (for the saved state)",
        content=render_template(
            "haproxy-servers.j2",
            backend=data.haproxy_backend,
            servers=servers,
            tls=backend_ca is not None,
            save_state=STATE_SCRIPT,
        ),
        dest=SERVERS_FILE,
    )
    save_state = config_file(
        name="Ensure the script saving the servers' runtime states is installed",
        content=render_template(
            "haproxy-state.sh.j2",
            socket=shlex.quote(data.haproxy_admin_socket),
            state_file=shlex.quote(data.haproxy_server_state_file),
            marker=shlex.quote(RELOAD_MARKER),
            servers_file=shlex.quote(SERVERS_FILE),
            wait_s=NEW_WORKER_WAIT_S,
        ),
        dest=STATE_SCRIPT,
        mode=0o755,
        validate="sh -n {path}",
    )
    unit = config_file(
        name="Ensure reloads and restarts keep the servers' runtime states",
        content=render_template("haproxy-state.conf.j2", script=STATE_SCRIPT),
        dest="/etc/systemd/system/haproxy.service.d/10-deploykit-server-state.conf",
    )
    configuration = config_file(
        name="Ensure HAProxy's configuration is current and valid",
        content=render_template(
            "haproxy.cfg.j2",
            settings=data,
            servers=servers,
            certificate=CERTIFICATE_PATH if certificate else None,
            backend_ca=BACKEND_CA_PATH if backend_ca else None,
        ),
        dest="/etc/haproxy/haproxy.cfg",
        validate="/usr/sbin/haproxy -c -f {path}",
    )
    changed = configuration.will_change or any(
        op is not None and op.will_change for op in (certificate, backend_ca, servers_file)
    )
    systemd.service(
        name="Ensure HAProxy is running with the current configuration",
        service="haproxy.service",
        running=True,
        enabled=True,
        daemon_reload=unit.will_change or save_state.will_change,
        # A reload, never a restart: master-worker hands the listening sockets over.
        reloaded=changed,
    )


def read_repository_file(data, key: str) -> str:
    """The content of the repository file a setting names; a missing one stops the run
    naming the setting (no host has been changed while planning)."""
    path = REPO_ROOT / data.get(key)
    if not path.is_file():
        refuse(
            [
                f"{key}: {data.get(key)} does not exist (the fleet CA and the web hosts' "
                "certificate: files/tls/README.md; or set haproxy_backend_tls = False)"
            ]
        )
    return path.read_text()


def _read_pem(relative: str) -> str:
    """The certificate and key, refused while planning when the key is missing, locked
    by git-crypt, or would be stored unencrypted in git (deploykit/secrets.py)."""
    try:
        return read_private_key_file(relative, "haproxy_tls_certificate")
    except SecretsError as error:
        refuse([str(error)])


def _private_key_block(pem: str) -> str:
    """The key part of a PEM bundle, so that --diff never prints it."""
    match = PRIVATE_KEY.search(pem)
    return match.group(0) if match else ""
