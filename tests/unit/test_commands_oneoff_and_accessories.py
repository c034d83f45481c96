"""One-off, console and accessory command lines: exact strings, then the scripts run for
real with `sh -c` against a fake `docker`."""

from __future__ import annotations

from deploykit.commands.accessories import list_accessories, run_accessory
from deploykit.commands.containers import running_versions, stop_and_remove
from deploykit.commands.oneoff import console, parse_exit_status, report_exit_status, run_throwaway
from tests.unit.fakes import install_stubs, run_with_stubs

IMAGE = "registry:5000/deploykit/app:v2"


def test_run_throwaway_uses_the_env_file_and_network_and_is_removed():
    assert run_throwaway(
        IMAGE,
        ["python3", "/app/manage.py", "migrate"],
        network="deploykit-app",
        env_file="/etc/deploykit/app.env",
    ) == (
        "docker run --rm --env-file /etc/deploykit/app.env --network deploykit-app"
        " --label io.deploykit.oneoff=oneoff registry:5000/deploykit/app:v2"
        " python3 /app/manage.py migrate"
    )


def test_run_throwaway_quotes_every_word():
    command = run_throwaway(
        IMAGE,
        ["sh", "-c", "echo \"$APP_VERSION\"; rm -rf '/tmp/x y'"],
        network="my net",
        env_file="/etc/deploy kit/app.env",
        purpose="release",
    )
    assert command == (
        "docker run --rm --env-file '/etc/deploy kit/app.env' --network 'my net'"
        " --label io.deploykit.oneoff=release registry:5000/deploykit/app:v2"
        " sh -c 'echo \"$APP_VERSION\"; rm -rf '\"'\"'/tmp/x y'\"'\"''"
    )


def test_report_exit_status_prints_and_keeps_the_status(tmp_path):
    result = run_with_stubs(report_exit_status("sh -c 'echo out; exit 3'"), tmp_path, tmp_path)
    assert result.returncode == 3
    assert result.stdout == "out\ndeploykit: one-off exited with status 3\n"
    assert parse_exit_status(result.stdout) == 3
    assert parse_exit_status("out\n") is None


def test_running_app_version():
    assert running_versions() == (
        "docker ps --filter label=io.deploykit.role=app"
        ' --format \'{{.Label "io.deploykit.tag"}}@{{.Label "io.deploykit.digest"}}\''
        " 2>/dev/null | sed -e 's/@$//'"
    )


def test_console_with_the_running_version():
    app = running_versions()
    workers = running_versions("worker")
    assert console(
        "registry:5000/deploykit/app",
        ["sh"],
        network="deploykit-app",
        env_file="/etc/deploykit/app.env",
    ) == (
        f"version=$({app} 2>/dev/null | tail -n 1);"
        f' [ -n "$version" ] || version=$({workers} 2>/dev/null | tail -n 1);'
        ' if [ -z "$version" ]; then'
        " echo 'deploykit: no app or worker container runs on this host; give --tag TAG' >&2;"
        " exit 1; fi;"
        " tag=${version%%@*};"
        ' case $version in *@*) reference="@${version#*@}" ;; *) reference=":$tag" ;; esac;'
        " exec docker run --rm --interactive --tty --env-file /etc/deploykit/app.env"
        " --network deploykit-app --label io.deploykit.oneoff=console"
        ' registry:5000/deploykit/app"$reference" sh'
    )


def test_console_with_a_given_tag_and_no_terminal():
    assert console(
        "registry:5000/deploykit/app",
        ["python3", "-c", "print('hi')"],
        network="n",
        env_file="/e",
        tag="v1",
        tty=False,
    ) == (
        "exec docker run --rm --interactive --env-file /e --network n"
        " --label io.deploykit.oneoff=console registry:5000/deploykit/app:v1"
        " python3 -c 'print('\"'\"'hi'\"'\"')'"
    )


FAKE_DOCKER = """#!/bin/sh
echo "$@" >> "$STUB_DIR/docker.log"
case "$*" in
  "ps --filter label=io.deploykit.role=app "*) cat "$STUB_DIR/running" 2>/dev/null ;;
  "ps --filter label=io.deploykit.role=worker "*) cat "$STUB_DIR/workers" 2>/dev/null ;;
esac
"""


def test_console_script_runs_the_running_tag(tmp_path):
    bin_dir = install_stubs(tmp_path, {"docker": FAKE_DOCKER})
    # An unpinned release: docker prints the empty digest label after the "@".
    (tmp_path / "running").write_text("v2@\n")
    script = console("r/app", ["sh"], network="n", env_file="/e")
    result = run_with_stubs(script, bin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    run_line = (tmp_path / "docker.log").read_text().splitlines()[-1]
    assert run_line == (
        "run --rm --interactive --tty --env-file /e --network n"
        " --label io.deploykit.oneoff=console r/app:v2 sh"
    )


def test_console_script_runs_the_running_digest_not_the_tag(tmp_path):
    """A pinned release: the console gets exactly the bits the app runs, even if its tag
    was pushed again since."""
    digest = "sha256:" + "ab" * 32
    bin_dir = install_stubs(tmp_path, {"docker": FAKE_DOCKER})
    (tmp_path / "running").write_text(f"latest@{digest}\n")
    result = run_with_stubs(console("r/app", ["sh"], network="n", env_file="/e"), bin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "docker.log").read_text().splitlines()[-1].endswith(f" r/app@{digest} sh")


def test_console_script_on_a_job_host_runs_the_workers_version(tmp_path):
    digest = "sha256:" + "cd" * 32
    bin_dir = install_stubs(tmp_path, {"docker": FAKE_DOCKER})
    (tmp_path / "workers").write_text(f"v3@{digest}\nv3@{digest}\n")
    result = run_with_stubs(console("r/app", ["sh"], network="n", env_file="/e"), bin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "docker.log").read_text().splitlines()[-1].endswith(f" r/app@{digest} sh")


def test_console_script_without_an_app_says_so(tmp_path):
    bin_dir = install_stubs(tmp_path, {"docker": FAKE_DOCKER})
    result = run_with_stubs(console("r/app", ["sh"], network="n", env_file="/e"), bin_dir, tmp_path)
    assert result.returncode == 1
    assert "no app or worker container runs on this host" in result.stderr
    assert "run" not in (tmp_path / "docker.log").read_text()


def test_run_accessory():
    assert run_accessory(
        "search",
        "elasticsearch:8.15.3",
        spec_hash="0123456789abcdef",
        env_file="/etc/deploykit/accessories/search.env",
        ports=["9200:9200", "127.0.0.1:9300:9300"],
        volumes=["search-data:/usr/share/elasticsearch/data"],
        command=["bin/elasticsearch", "-E", "x=a b"],
    ) == (
        "docker run --detach --name accessory-search --restart unless-stopped"
        " --env-file /etc/deploykit/accessories/search.env"
        " --label io.deploykit.accessory=search"
        " --label io.deploykit.accessory.spec=0123456789abcdef"
        " --publish 9200:9200 --publish 127.0.0.1:9300:9300"
        " --volume search-data:/usr/share/elasticsearch/data"
        " elasticsearch:8.15.3 bin/elasticsearch -E 'x=a b'"
    )


def test_list_accessories_and_stop_and_remove():
    assert list_accessories() == (
        "docker ps --all --filter label=io.deploykit.accessory --format"
        ' \'{{.Names}} {{.Label "io.deploykit.accessory"}}'
        ' {{.Label "io.deploykit.accessory.spec"}} {{.State}}\''
    )
    # No --volumes: a recreated accessory keeps its data.
    assert stop_and_remove("accessory-search", 30) == (
        "docker stop --time 30 accessory-search >/dev/null; docker rm --force accessory-search"
    )
