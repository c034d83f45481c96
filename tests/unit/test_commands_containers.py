"""Docker command lines for containers and the app + nginx pair: the exact strings run
on a web host, then the scripts run for real with `sh -c` (dash, as pyinfra runs them
on Debian) against fake `docker` and `curl` executables that print canned output and
record their arguments."""

from __future__ import annotations

import subprocess

import pytest

from deploykit.commands import images as image_commands
from deploykit.commands.containers import (
    CONTAINER_EXITED,
    list_release_containers,
    remove,
    run_container,
    start_existing,
    stop,
    wait_http_ok,
)
from deploykit.commands.images import IMAGES_LOCK, prune_dangling_images, pull, with_images_lock
from deploykit.commands.pairs import (
    Pair,
    list_pairs,
    parse_pairs,
    remove_release,
    start_app,
    start_nginx,
)
from deploykit.commands.shell import TIMED_OUT
from tests.unit.fakes import install_stubs, run_with_stubs, waited_ms

PAIR = Pair(release="v2-20240501120000", tag="v2")
APP_IMAGE = "registry:5000/deploykit/app:v2"


# -- exact command strings ----------------------------------------------------------------


def test_pair_names_its_containers_after_the_release():
    assert (PAIR.app, PAIR.nginx) == ("app-v2-20240501120000", "nginx-v2-20240501120000")


def test_start_app():
    assert start_app(PAIR, APP_IMAGE, "deploykit", "/etc/deploykit/app.env", 30) == (
        "docker run --detach --name app-v2-20240501120000 --network deploykit"
        " --restart unless-stopped --stop-timeout 30 --env-file /etc/deploykit/app.env"
        " --label io.deploykit.role=app --label io.deploykit.tag=v2"
        " --label io.deploykit.release=v2-20240501120000"
        " registry:5000/deploykit/app:v2"
    )


def test_start_nginx_points_it_at_the_app_of_its_pair():
    command = start_nginx(PAIR, "registry:5000/deploykit/nginx:1", "deploykit", 8000, 8080)
    assert command == (
        "docker run --detach --name nginx-v2-20240501120000 --network deploykit"
        " --restart unless-stopped --env APP_UPSTREAM=app-v2-20240501120000:8000"
        " --label io.deploykit.role=nginx --label io.deploykit.tag=v2"
        " --label io.deploykit.release=v2-20240501120000"
        " --publish 8080:80 registry:5000/deploykit/nginx:1"
    )


def test_start_app_and_nginx_take_the_hardening_flags_before_the_image():
    app = start_app(
        PAIR,
        APP_IMAGE,
        "deploykit",
        "/etc/deploykit/app.env",
        30,
        extra_flags=("--cap-drop=ALL", "--read-only", "--tmpfs=/tmp:rw,size=64m"),
    )
    assert app.endswith(
        " --label io.deploykit.release=v2-20240501120000"
        " --cap-drop=ALL --read-only --tmpfs=/tmp:rw,size=64m registry:5000/deploykit/app:v2"
    )
    nginx = start_nginx(
        PAIR,
        "registry:5000/deploykit/nginx:1",
        "deploykit",
        8000,
        8080,
        extra_flags=("--cap-add=NET_BIND_SERVICE", "--tmpfs=/run dir"),
    )
    assert nginx.endswith(
        " --publish 8080:80 --cap-add=NET_BIND_SERVICE '--tmpfs=/run dir'"
        " registry:5000/deploykit/nginx:1"
    )


def test_run_container_minimal():
    assert run_container("tool", "busybox:1", network="bridge", labels={}) == (
        "docker run --detach --name tool --network bridge --restart unless-stopped busybox:1"
    )


def test_run_container_quotes_every_value():
    command = run_container(
        "tool",
        "busybox:1",
        network="bridge",
        labels={"note": "it's fine"},
        env_file="/etc/deploy kit/app.env",
        env={"GREETING": "hello world"},
        publish=["127.0.0.1:8080:80"],
        stop_timeout_s=10,
        command=["sh", "-c", "echo 'hi' $HOME"],
    )
    assert command == (
        "docker run --detach --name tool --network bridge --restart unless-stopped"
        " --stop-timeout 10 --env-file '/etc/deploy kit/app.env'"
        " --env 'GREETING=hello world' --label 'note=it'\"'\"'s fine'"
        " --publish 127.0.0.1:8080:80 busybox:1 sh -c 'echo '\"'\"'hi'\"'\"' $HOME'"
    )


def test_stop_gives_the_container_its_grace_period():
    assert stop("app-v1-1", 30) == "docker stop --time 30 app-v1-1"


def test_remove_forces_and_drops_volumes():
    assert remove("nginx-v1-1", "app-v1-1") == ("docker rm --force --volumes nginx-v1-1 app-v1-1")


def test_start_existing():
    assert start_existing("app-v1-1") == "docker start app-v1-1"


def test_list_release_containers_reads_the_labels_the_roll_sets():
    assert list_release_containers() == (
        "docker ps -a --filter label=io.deploykit.role --format"
        ' \'{{.Names}}\t{{.Label "io.deploykit.role"}}\t{{.Label "io.deploykit.tag"}}'
        '\t{{.Status}}\t{{or (.Label "io.deploykit.digest") "-"}}\''
    )


def test_list_pairs():
    assert list_pairs() == (
        "docker ps --all --filter label=io.deploykit.role --format"
        ' \'{{.Label "io.deploykit.role"}} {{.Label "io.deploykit.tag"}}'
        ' {{.Label "io.deploykit.release"}} {{.State}} {{or (.Label "io.deploykit.digest") "-"}}\''
    )


def test_parse_pairs_keeps_docker_order_and_skips_short_lines():
    digest = "sha256:" + "e" * 64
    output = (
        "app v1 v1-20240101000000 exited -\n"
        "nginx v1 v1-20240101000000 exited -\n"
        f"app v2 v2-20240501120000 running {digest}\n"
        "\n"
        "app  broken\n"
    )
    assert parse_pairs(output) == [
        ("app", "v1", "v1-20240101000000", "exited", ""),
        ("nginx", "v1", "v1-20240101000000", "exited", ""),
        ("app", "v2", "v2-20240501120000", "running", digest),
    ]


def test_wait_http_ok_on_a_host_port():
    assert wait_http_ok("http://127.0.0.1:8080/up", 30) == (
        "url=http://127.0.0.1:8080/up;"
        " start=$(date +%s%N); deadline=$((start + 30000 * 1000000));"
        ' while :; do code=$(curl -s -o /dev/null -m 2 -w "%{http_code}" "$url");'
        ' if [ "$code" = 200 ]; then echo waited_ms=$((($(date +%s%N) - start) / 1000000));'
        " exit 0; fi;"
        ' if [ "$(date +%s%N)" -ge "$deadline" ]; then'
        ' echo "no 200 from $url within 30s (last status $code)" >&2;'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 3; fi; sleep 0.1; done"
    )


def test_wait_http_ok_on_a_container_ip_fails_fast_when_the_container_exits():
    assert wait_http_ok("http://CONTAINER_IP:8000/up", 30, container="app-v2-1") == (
        "ip=$(docker inspect -f"
        " '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' app-v2-1);"
        ' url=http://"$ip":8000/up;'
        " start=$(date +%s%N); deadline=$((start + 30000 * 1000000));"
        ' while :; do code=$(curl -s -o /dev/null -m 2 -w "%{http_code}" "$url");'
        ' if [ "$code" = 200 ]; then echo waited_ms=$((($(date +%s%N) - start) / 1000000));'
        " exit 0; fi;"
        ' if [ "$(docker inspect -f "{{.State.Running}}" app-v2-1)" != true ]; then'
        " echo 'container app-v2-1 exited:' >&2; docker logs --tail 20 app-v2-1 >&2;"
        " exit 4; fi;"
        ' if [ "$(date +%s%N)" -ge "$deadline" ]; then'
        ' echo "no 200 from $url within 30s (last status $code)" >&2;'
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit 3; fi; sleep 0.1; done"
    )


# -- the commands, run with sh against fake docker and curl -------------------------------

FAKE_DOCKER = r"""#!/bin/sh
for arg in "$@"; do printf '[%s]' "$arg"; done >> "$STUB_DIR/docker.calls"
echo >> "$STUB_DIR/docker.calls"
case "$1" in
inspect)
    case "$*" in
    *State.Running*) cat "$STUB_DIR/running" 2>/dev/null || echo true ;;
    *) echo 172.18.0.5 ;;
    esac ;;
logs) echo "app: cannot reach the database" ;;
ps) cat "$STUB_DIR/ps" ;;
esac
"""

FAKE_CURL = r"""#!/bin/sh
for arg in "$@"; do printf '[%s]' "$arg"; done >> "$STUB_DIR/curl.calls"
echo >> "$STUB_DIR/curl.calls"
n=$(( $(cat "$STUB_DIR/curls" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$STUB_DIR/curls"
if [ -f "$STUB_DIR/code.$n" ]; then cat "$STUB_DIR/code.$n"; else cat "$STUB_DIR/code"; fi
"""


@pytest.fixture
def host(tmp_path):
    """A fake web host: `docker` and `curl` on PATH (the real docker is not), canned
    answers, recorded calls."""
    bin_dir = install_stubs(tmp_path, {"docker": FAKE_DOCKER, "curl": FAKE_CURL})

    class FakeHost:
        def answer(self, name: str, text: str):
            (tmp_path / name).write_text(text)

        def run(self, script: str) -> subprocess.CompletedProcess:
            return run_with_stubs(script, bin_dir, tmp_path)

        def calls(self, name: str) -> list[str]:
            path = tmp_path / f"{name}.calls"
            return path.read_text().splitlines() if path.exists() else []

    return FakeHost()


def test_start_app_reaches_docker_as_separate_arguments(host):
    result = host.run(start_app(PAIR, APP_IMAGE, "deploykit", "/etc/deploy kit/app.env", 30))
    assert result.returncode == 0, result.stderr
    assert host.calls("docker") == [
        "[run][--detach][--name][app-v2-20240501120000][--network][deploykit]"
        "[--restart][unless-stopped][--stop-timeout][30][--env-file][/etc/deploy kit/app.env]"
        "[--label][io.deploykit.role=app][--label][io.deploykit.tag=v2]"
        "[--label][io.deploykit.release=v2-20240501120000][registry:5000/deploykit/app:v2]"
    ]


def test_run_container_passes_a_quoted_command_verbatim(host):
    command = run_container(
        "tool",
        "busybox:1",
        network="bridge",
        labels={"note": "it's fine"},
        command=["sh", "-c", "echo 'hi' $HOME"],
    )
    assert host.run(command).returncode == 0
    assert host.calls("docker") == [
        "[run][--detach][--name][tool][--network][bridge][--restart][unless-stopped]"
        "[--label][note=it's fine][busybox:1][sh][-c][echo 'hi' $HOME]"
    ]


def test_list_pairs_output_parses_into_pairs(host):
    host.answer(
        "ps", "app v1 v1-1 exited -\napp v2 v2-2 running sha256:9f\nnginx v2 v2-2 running -\n"
    )
    result = host.run(list_pairs())
    assert result.returncode == 0, result.stderr
    assert host.calls("docker") == [
        "[ps][--all][--filter][label=io.deploykit.role][--format]"
        '[{{.Label "io.deploykit.role"}} {{.Label "io.deploykit.tag"}}'
        ' {{.Label "io.deploykit.release"}} {{.State}} {{or (.Label "io.deploykit.digest") "-"}}]'
    ]
    assert parse_pairs(result.stdout) == [
        ("app", "v1", "v1-1", "exited", ""),
        ("app", "v2", "v2-2", "running", "sha256:9f"),
        ("nginx", "v2", "v2-2", "running", ""),
    ]


def test_wait_http_ok_exits_0_on_200(host):
    host.answer("code", "200")
    result = host.run(wait_http_ok("http://127.0.0.1:8080/up", 5, poll_s=0.05))
    assert result.returncode == 0, result.stderr
    assert 0 <= waited_ms(result.stdout) < 5000
    assert host.calls("curl") == [
        "[-s][-o][/dev/null][-m][2][-w][%{http_code}][http://127.0.0.1:8080/up]"
    ]


def test_wait_http_ok_polls_through_errors_until_200(host):
    host.answer("code.1", "000")
    host.answer("code.2", "503")
    host.answer("code", "200")
    result = host.run(wait_http_ok("http://127.0.0.1:8080/up", 5, poll_s=0.05))
    assert result.returncode == 0, result.stderr
    assert len(host.calls("curl")) == 3


def test_wait_http_ok_times_out_with_exit_3_and_the_last_status(host):
    host.answer("code", "503")
    result = host.run(wait_http_ok("http://127.0.0.1:8080/up", 0.3, poll_s=0.05))
    assert result.returncode == TIMED_OUT == 3
    assert result.stderr == "no 200 from http://127.0.0.1:8080/up within 0.3s (last status 503)\n"
    assert len(host.calls("curl")) >= 2


def test_wait_http_ok_asks_the_container_ip_of_docker(host):
    host.answer("code", "200")
    result = host.run(wait_http_ok("http://CONTAINER_IP:8000/up", 5, container="app-v2-1"))
    assert result.returncode == 0, result.stderr
    assert host.calls("docker") == [
        "[inspect][-f][{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}][app-v2-1]"
    ]
    assert host.calls("curl")[0].endswith("[http://172.18.0.5:8000/up]")


def test_wait_http_ok_exits_4_with_the_logs_when_the_container_stopped(host):
    host.answer("code", "000")
    host.answer("running", "false")
    result = host.run(wait_http_ok("http://CONTAINER_IP:8000/up", 5, container="app-v2-1"))
    assert result.returncode == CONTAINER_EXITED == 4
    assert result.stderr == "container app-v2-1 exited:\napp: cannot reach the database\n"
    assert host.calls("docker")[1:] == [
        "[inspect][-f][{{.State.Running}}][app-v2-1]",
        "[logs][--tail][20][app-v2-1]",
    ]


def test_wait_http_ok_keeps_polling_while_the_container_runs(host):
    host.answer("code.1", "000")
    host.answer("code", "200")
    host.answer("running", "true")
    result = host.run(
        wait_http_ok("http://CONTAINER_IP:8000/up", 5, container="app-v2-1", poll_s=0.05)
    )
    assert result.returncode == 0, result.stderr
    assert len(host.calls("curl")) == 2


def test_wait_http_ok_passes_a_url_with_shell_characters_verbatim(host):
    # `$`, `'` and spaces may appear in a URL; the shell must not expand or split them.
    host.answer("code", "200")
    url = "http://127.0.0.1:8080/up?next=$HOME&name=o'brien x"
    result = host.run(wait_http_ok(url, 5))
    assert result.returncode == 0, result.stderr
    assert host.calls("curl") == [f"[-s][-o][/dev/null][-m][2][-w][%{{http_code}}][{url}]"]


def test_remove_release_exact_command():
    assert remove_release("v2-20261126", timeout_s=1) == (
        "for attempt in $(seq 4); do"
        " ids=$(docker ps -aq --filter label=io.deploykit.release=v2-20261126);"
        ' [ -z "$ids" ] || docker rm --force --volumes $ids >/dev/null;'
        " if ! pgrep -f -- 'docke[r] run .*io.deploykit.release=v2-20261126' >/dev/null &&"
        ' [ -z "$(docker ps -aq --filter label=io.deploykit.release=v2-20261126)" ];'
        " then exit 0; fi;"
        " sleep 0.25; done; echo 'containers of release v2-20261126 keep coming back' >&2; exit 1"
    )


def test_remove_release_waits_for_an_interrupted_docker_run_to_finish(tmp_path):
    """A `docker run` still in flight (pgrep finds it) creates its container after the
    first removal: the loop removes it again once the run is over."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        'ps) cat "$STUB/containers" 2>/dev/null ;;\n'
        'rm) shift 3; echo "$@" >> "$STUB/removed"; : > "$STUB/containers" ;;\n'
        "esac\n"
    )
    # The in-flight run: seen twice by pgrep, then it finishes by creating a container.
    (bin_dir / "pgrep").write_text(
        "#!/bin/sh\n"
        'n=$(( $(cat "$STUB/pgrep" 2>/dev/null || echo 0) + 1 )); echo $n > "$STUB/pgrep"\n'
        "if [ $n -le 2 ]; then exit 0; fi\n"
        'if [ $n -eq 3 ]; then echo late1 > "$STUB/containers"; exit 0; fi\n'
        "exit 1\n"
    )
    for tool in ("docker", "pgrep"):
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "containers").write_text("first1\n")
    result = subprocess.run(
        ["sh", "-c", remove_release("v2-1", timeout_s=5)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "removed").read_text().split() == ["first1", "late1"]


def test_remove_release_does_not_mistake_its_own_shell_for_a_docker_run(tmp_path):
    """Run through `sh -c`, as pyinfra and sshd do: the script's own command line holds
    the release label, and the real pgrep must not count it as a run in flight."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "docker").chmod(0o755)
    result = subprocess.run(
        ["sh", "-c", remove_release("v2-1", timeout_s=1)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_cleanup_and_pulls_share_one_lock_per_host():
    assert IMAGES_LOCK == "/run/deploykit/images.lock"
    assert with_images_lock("docker image prune --force >/dev/null") == (
        "flock --wait 600 /run/deploykit/images.lock sh -c 'docker image prune --force >/dev/null'"
    )
    assert prune_dangling_images() == "docker image prune --force >/dev/null"
    assert pull("registry:5000/app:v2") == (
        "flock --wait 600 /run/deploykit/images.lock docker pull --quiet registry:5000/app:v2"
    )


def test_a_cleanup_waits_while_a_pull_holds_the_images_lock(tmp_path, monkeypatch):
    """Real flock(1): the second holder starts only once the first has finished."""
    import time

    monkeypatch.setattr(image_commands, "IMAGES_LOCK", str(tmp_path / "images.lock"))
    order = tmp_path / "order"
    pull = subprocess.Popen(
        [
            "sh",
            "-c",
            image_commands.with_images_lock(
                f"echo pull-start >> {order}; sleep 1; echo pull-end >> {order}"
            ),
        ]
    )
    # The pull holds the lock once it has written its start (bounded wait, not a guess).
    deadline = time.monotonic() + 10
    while not (order.exists() and "pull-start" in order.read_text()):
        assert time.monotonic() < deadline, "the pull never started"
        time.sleep(0.01)
    cleanup = subprocess.run(
        ["sh", "-c", image_commands.with_images_lock(f"echo cleanup >> {order}")], timeout=10
    )
    pull.wait(timeout=10)
    assert cleanup.returncode == 0 and pull.returncode == 0
    assert order.read_text().split() == ["pull-start", "pull-end", "cleanup"]
