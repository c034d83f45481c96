"""TLS from HAProxy to nginx on the web hosts: nginx's run line with the certificate
mounted, its reload, and HAProxy's backend with and without `haproxy_backend_tls`."""

from __future__ import annotations

from deploykit.commands.pairs import NginxTls, Pair, reload_nginx, start_nginx
from deploykit.components.haproxy import DEFAULTS
from deploykit.operations.config_file import render_template
from tests.unit.fakes import install_stubs, run_with_stubs

PAIR = Pair(release="v2-20240501120000", tag="v2")


def test_start_nginx_with_tls_publishes_the_tls_port_and_mounts_the_certificate():
    command = start_nginx(
        PAIR,
        "registry:5000/deploykit/nginx:2",
        "deploykit",
        8000,
        80,
        NginxTls(port=443, folder="/etc/deploykit/tls"),
    )
    assert command == (
        "docker run --detach --name nginx-v2-20240501120000 --network deploykit"
        " --restart unless-stopped --env APP_UPSTREAM=app-v2-20240501120000:8000"
        " --label io.deploykit.role=nginx --label io.deploykit.tag=v2"
        " --label io.deploykit.release=v2-20240501120000"
        " --publish 80:80 --publish 443:443 --volume /etc/deploykit/tls:/etc/nginx/tls:ro"
        " registry:5000/deploykit/nginx:2"
    )


def test_reload_nginx_signals_every_running_nginx_of_the_kit():
    assert reload_nginx() == (
        "docker ps --quiet --filter label=io.deploykit.role=nginx"
        " | xargs --no-run-if-empty docker kill --signal HUP >/dev/null"
    )


def haproxy_cfg(backend_ca):
    settings = {**DEFAULTS}
    servers = [{"name": "web1", "address": "10.0.0.11", "port": 443 if backend_ca else 80}]
    return render_template(
        "haproxy.cfg.j2",
        settings=type("Data", (), settings),
        servers=servers,
        certificate=None,
        backend_ca=backend_ca,
    )


def test_haproxy_checks_and_sends_requests_over_tls_verifying_the_fleet_ca():
    config = haproxy_cfg("/etc/haproxy/certs/backend-ca.crt")
    assert (
        "rise 2 fall 3 ssl verify required ca-file /etc/haproxy/certs/backend-ca.crt\n"
        "    server web1 10.0.0.11:443\n"
    ) in config


def test_a_slow_health_check_answer_does_not_mark_a_server_down():
    config = haproxy_cfg(None)
    # Two seconds to connect (min(timeout connect, inter)) and two more to answer; DOWN
    # after three misses in a row. Live traffic never shortens a check: on HAProxy 2.6,
    # "observe layer4 ... on-error fastinter" cut checks in progress to 250 ms, and a
    # reload's burst of connection errors marked every healthy server DOWN.
    assert (
        "    timeout check 2000ms\n"
        "    default-server check inter 2000ms fastinter 250ms downinter 2000ms rise 2 fall 3\n"
    ) in config
    directives = [line for line in config.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in directives if "observe" in line]


def test_with_backend_tls_off_haproxy_speaks_plain_http_to_port_80():
    config = haproxy_cfg(None)
    assert "rise 2 fall 3\n    server web1 10.0.0.11:80\n" in config
    assert "ssl verify" not in config


STATE = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state \
srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl \
srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 web 1 web1 10.0.0.11 2 8 1 1 120 15 3 4 6 0 0 0 - 80 - 0 0 - - 0
3 web 2 web9 10.0.0.19 2 0 1 1 120 15 3 4 6 0 0 0 - 80 - 0 0 - - 0
"""


def save_state_script(tmp_path, servers_file) -> str:
    """The state script's `save` action, as `sh -c` runs it (arguments set first)."""
    return "set -- save\n" + render_template(
        "haproxy-state.sh.j2",
        socket="/run/haproxy/admin.sock",
        state_file=str(tmp_path / "state"),
        marker=str(tmp_path / "reloading"),
        servers_file=str(servers_file),
        wait_s=1,
    )


def test_the_saved_state_keeps_drains_but_takes_address_port_and_tls_from_the_config(tmp_path):
    """HAProxy prefers the state file's address, port and TLS to its configuration's: the
    save script writes the configured ones (web9 is no longer configured: kept as is)."""
    servers = tmp_path / "servers"
    servers.write_text(
        render_template(
            "haproxy-servers.j2",
            backend="web",
            servers=[{"name": "web1", "address": "10.0.0.11", "port": 443}],
            tls=True,
            save_state="/x",
        )
    )
    script = save_state_script(tmp_path, servers)
    (tmp_path / "show").write_text(STATE)
    bin_dir = install_stubs(tmp_path, {"socat": '#!/bin/sh\ncat "$STUB_DIR/show"\n'})
    result = run_with_stubs(script, bin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "state").read_text().splitlines()
    assert lines[:2] == STATE.replace("\\\n", "").splitlines()[:2]
    # Drained (admin state 8) still, now on 443 over TLS.
    assert lines[2] == "3 web 1 web1 10.0.0.11 2 8 1 1 120 15 3 4 6 0 0 0 - 443 - 1 0 - - 0"
    assert lines[3] == "3 web 2 web9 10.0.0.19 2 0 1 1 120 15 3 4 6 0 0 0 - 80 - 0 0 - - 0"
    assert not (tmp_path / "state.raw").exists()


def test_a_failed_dump_leaves_the_saved_state_alone(tmp_path):
    (tmp_path / "state").write_text("kept\n")
    script = save_state_script(tmp_path, tmp_path / "servers")
    bin_dir = install_stubs(tmp_path, {"socat": "#!/bin/sh\nexit 1\n"})
    assert run_with_stubs(script, bin_dir, tmp_path).returncode != 0
    assert (tmp_path / "state").read_text() == "kept\n"
