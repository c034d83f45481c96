"""bin/console: the inventory and group_data read as pyinfra reads them, then the ssh
line it would exec, printed instead with DEPLOYKIT_CONSOLE_PRINT (nothing connects).

Run as a subprocess, as a user runs it: loading pyinfra's CLI monkey-patches the
process with gevent, which the other unit tests must not inherit."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from deploykit.commands.oneoff import resolve_running_tag

REPO_ROOT = Path(__file__).resolve().parents[2]
# The staging inventory pins host keys: ssh checks them against its known_hosts file.
PINNED = [
    "-o",
    f"UserKnownHostsFile={REPO_ROOT / 'inventories' / 'staging.known_hosts'}",
    "-o",
    "StrictHostKeyChecking=yes",
]


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
        *PINNED,
        "deploy@192.0.2.21",
        (
            resolve_running_tag(
                "deploykit: no app or worker container runs on this host; give --tag TAG"
            )
            + "exec docker run --rm --interactive --env-file /etc/deploykit/app.env"
            " --network deploykit-app --label io.deploykit.oneoff=console"
            ' registry.example.com/acme/app"$reference" python3'
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
        *PINNED,
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


# -- the audit: a console opens a shell with production secrets -----------------------------

FAKE_SSH = """#!{python}
import json, os, sys, time
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
remote = sys.argv[-1]
if "grep ." in remote:  # the tag the host runs
    print("v7")
elif remote.startswith("sudo -n sh -c"):  # an audit line
    sys.exit(int(os.environ.get("FAKE_AUDIT_STATUS", "0")))
else:  # the console itself
    if os.environ.get("FAKE_CONSOLE_WAITS"):
        open(os.environ["FAKE_CONSOLE_WAITS"], "w").close()
        time.sleep(60)
    sys.exit(int(os.environ.get("FAKE_CONSOLE_STATUS", "0")))
"""


def audited_console(tmp_path, *args: str, **env: str) -> tuple[subprocess.Popen, Path]:
    """bin/console for real, with an `ssh` on PATH that records its calls."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ssh").write_text(FAKE_SSH.format(python=sys.executable))
    (bin_dir / "ssh").chmod(0o755)
    calls = tmp_path / "ssh-calls"
    process = subprocess.Popen(
        ["bin/console", *args],
        cwd=REPO_ROOT,
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "FAKE_SSH_LOG": str(calls),
            "DEPLOYKIT_DEPLOYER": "ann@laptop",
            **env,
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, calls


def ssh_calls(calls: Path) -> list[tuple[str, str]]:
    """(host address, what) of each ssh call: 'tag', 'console', or an audit entry."""
    seen = []
    for line in calls.read_text().splitlines():
        argv = json.loads(line)
        host, remote = argv[-2].split("@")[-1], argv[-1]
        if remote.startswith("sudo -n sh -c"):
            append = shlex.split(shlex.split(remote)[4])
            seen.append((host, json.loads(next(w for w in append if w.startswith("{")))))
        else:
            seen.append((host, "tag" if "grep ." in remote else remote))
    return seen


def test_a_console_is_audited_with_who_host_tag_and_its_end(tmp_path):
    process, calls = audited_console(
        tmp_path,
        "inventories/staging.py",
        "--",
        "python3",
        "/app/manage.py",
        "shell",
        "--password=hunter2",
        FAKE_CONSOLE_STATUS="3",
    )
    assert process.wait(timeout=60) == 3, process.stderr.read()
    (tag_host, tag), (lb1, started), (console_host, console), (lb2, finished) = ssh_calls(calls)
    assert (tag_host, tag) == ("192.0.2.21", "tag")
    assert lb1 == lb2 == "192.0.2.10"  # the first load balancer keeps the audit log
    assert console_host == "192.0.2.21"
    # The console runs the tag the audit names.
    assert "registry.example.com/acme/app:v7 python3 /app/manage.py shell" in console
    for entry in (started, finished):
        assert entry["who"] == "ann@laptop"
        assert entry["action"] == "console"
        assert entry["hosts"] == ["web1.staging.example.com"]
        assert entry["tag"] == "v7"
        assert entry["command"] == "python3"  # the name, not the arguments
        assert "at" in entry
    assert started["event"] == "started"
    assert (finished["event"], finished["result"]) == ("finished", "exited 3")
    assert "hunter2" not in json.dumps([started, finished])


def test_no_console_opens_when_its_start_cannot_be_audited(tmp_path):
    process, calls = audited_console(tmp_path, "inventories/staging.py", FAKE_AUDIT_STATUS="1")
    assert process.wait(timeout=60) == 2
    assert "could not write the audit log on lb1.staging.example.com, so no console was opened" in (
        process.stderr.read()
    )
    assert [what for _, what in ssh_calls(calls) if isinstance(what, str)] == ["tag"]


def test_a_console_ended_by_sigterm_still_writes_its_end(tmp_path):
    import signal
    import time

    started = tmp_path / "console-started"
    process, calls = audited_console(
        tmp_path, "inventories/staging.py", "--tag", "v2", FAKE_CONSOLE_WAITS=str(started)
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finished = ssh_calls(calls)[-1][1]
    assert (finished["event"], finished["tag"], finished["signal"]) == (
        "finished",
        "v2",
        "SIGTERM",
    )
