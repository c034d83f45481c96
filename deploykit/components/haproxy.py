"""HAProxy on the lb group: TLS termination, health-checked web servers, a runtime API.

Reloads are hitless (master-worker, listening sockets handed over) and keep each
server's runtime state: a drained server stays drained across a reload, because the
unit dumps `show servers state` to the state file right before every reload and stop,
and the configuration loads it back.
"""

from __future__ import annotations

import re

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from ..operations.config_file import config_file, render_template
from ..paths import REPO_ROOT

DEFAULTS = {
    # Name of the backend listing every web host; the rolling deploy drives its servers.
    "haproxy_backend": "web",
    # Port nginx publishes on each web host.
    "haproxy_web_port": 80,
    # The app's readiness path, checked through nginx.
    "haproxy_health_path": "/up",
    # Health check timing (ms): interval, interval while changing state, rise and fall.
    "haproxy_check_inter_ms": 1000,
    "haproxy_check_fastinter_ms": 250,
    "haproxy_check_rise": 2,
    "haproxy_check_fall": 2,
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
}

CERTIFICATE_PATH = "/etc/haproxy/certs/site.pem"
PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S
)


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
        pem = (REPO_ROOT / data.haproxy_tls_certificate).read_text()
        certificate = config_file(
            name="Ensure the TLS certificate is installed",
            content=pem,
            dest=CERTIFICATE_PATH,
            mode=0o600,
            secrets=[_private_key_block(pem)],
        )
    unit = config_file(
        name="Ensure reloads and restarts keep the servers' runtime states",
        content=render_template(
            "haproxy-state.conf.j2",
            socket=data.haproxy_admin_socket,
            state_file=data.haproxy_server_state_file,
        ),
        dest="/etc/systemd/system/haproxy.service.d/10-deploykit-server-state.conf",
    )
    configuration = config_file(
        name="Ensure HAProxy's configuration is current and valid",
        content=render_template(
            "haproxy.cfg.j2",
            settings=data,
            servers=web_servers(data.haproxy_web_port),
            certificate=CERTIFICATE_PATH if certificate else None,
        ),
        dest="/etc/haproxy/haproxy.cfg",
        validate="/usr/sbin/haproxy -c -f {path}",
    )
    changed = configuration.will_change or (certificate is not None and certificate.will_change)
    systemd.service(
        name="Ensure HAProxy is running with the current configuration",
        service="haproxy.service",
        running=True,
        enabled=True,
        daemon_reload=unit.will_change,
        # A reload, never a restart: master-worker hands the listening sockets over.
        reloaded=changed,
    )


def _private_key_block(pem: str) -> str:
    """The key part of a PEM bundle, so that --diff never prints it."""
    match = PRIVATE_KEY.search(pem)
    return match.group(0) if match else ""
