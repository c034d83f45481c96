"""bin/console: the inventory and group_data read as pyinfra reads them, then the ssh
line it would exec, printed instead with DEPLOYKIT_CONSOLE_PRINT (nothing connects).

Run as a subprocess, as a user runs it: loading pyinfra's CLI monkey-patches the
process with gevent, which the other unit tests must not inherit."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def console(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bin/console", *args],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "DEPLOYKIT_CONSOLE_PRINT": "1"},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,  # no terminal: ssh -T and docker run without --tty
        timeout=60,
        check=False,
    )


def test_default_is_python3_on_the_first_web_host_of_the_inventory():
    result = console("inventories/staging.py")
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == [
        "ssh",
        "-T",
        "deploy@192.0.2.21",
        (
            "tag=$(docker ps --filter label=io.deploykit.role=app"
            " --format '{{.Label \"io.deploykit.tag\"}}' 2>/dev/null | tail -n 1);"
            ' [ -n "$tag" ] || tag=$(docker ps --filter label=io.deploykit.role=worker'
            " --format '{{.Label \"io.deploykit.tag\"}}' 2>/dev/null | tail -n 1);"
            ' if [ -z "$tag" ]; then'
            " echo 'deploykit: no app or worker container runs on this host; give --tag TAG'"
            " >&2; exit 1; fi;"
            " exec docker run --rm --interactive --env-file /etc/deploykit/app.env"
            " --network deploykit-app --label io.deploykit.oneoff=console"
            ' registry.example.com/acme/app:"$tag" python3'
        ),
    ]


def test_a_chosen_host_tag_and_command():
    result = console(
        "inventories/staging.py",
        "--host",
        "job1.staging.example.com",
        "--tag",
        "v2",
        "--",
        "python3",
        "-c",
        "print(1)",
    )
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == [
        "ssh",
        "-T",
        "deploy@192.0.2.31",
        (
            "exec docker run --rm --interactive --env-file /etc/deploykit/app.env"
            " --network deploykit-app --label io.deploykit.oneoff=console"
            " registry.example.com/acme/app:v2 python3 -c 'print(1)'"
        ),
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["inventories/nope.py"], "inventory inventories/nope.py does not exist"),
        (["inventories/staging.py", "--host", "web9"], "host 'web9' is not in the inventory"),
        (
            ["inventories/staging.py", "--host", "db1.staging.example.com"],
            "db1.staging.example.com is in neither group web nor job: no app runs there",
        ),
    ],
)
def test_bad_input_is_refused(args, message):
    result = console(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == f"bin/console: {message}"
    assert result.stdout == ""
