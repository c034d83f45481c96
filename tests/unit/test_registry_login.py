"""registry_login: exact commands against a fake host, the login command run with stub
docker and runuser, the DockerClientAuths script run on real files, and the settings
that feed it (read_logins, the app env leaving registry passwords out)."""

from __future__ import annotations

import base64
import grp
import os
import pwd
import subprocess
from types import SimpleNamespace

import pytest
from pyinfra.api import FileUploadCommand
from pyinfra.api.exceptions import OperationError

from deploykit.facts import DockerClientAuths
from deploykit.operations import registry_login as registry_login_module
from deploykit.operations.registry_login import (
    login_command,
    registry_login,
    stored_auth_sha256,
)
from deploykit import registry_access
from deploykit.registry import ManifestAnswer
from deploykit.registry_access import password_secret_names, read_logins
from tests.unit.fakes import FakeHost, command_texts, install_stubs, run_operation

PASSWORD = "0123456789abcdef-registry-password"
USERS = {
    "root": {"home": "/root", "group": "root", "groups": []},
    "deploy": {"home": "/home/deploy", "group": "deploy", "groups": ["docker"]},
}
FOLDERS = ("/root/.docker", "/home/deploy/.docker")
PASSWORD_FILE = "/var/lib/deploykit-upload/registry-login-feedfacefeedface"
LOGIN_ROOT = (
    "install -d -m 0700 -o root -g root /root/.docker && runuser -u root -- "
    "env DOCKER_CONFIG=/root/.docker docker login --username deploykit --password-stdin "
    f"registry:5000 < {PASSWORD_FILE} >/dev/null && chmod 0600 /root/.docker/config.json"
)
LOGIN_DEPLOY = (
    "install -d -m 0700 -o deploy -g deploy /home/deploy/.docker && runuser -u deploy -- "
    "env DOCKER_CONFIG=/home/deploy/.docker docker login --username deploykit "
    f"--password-stdin registry:5000 < {PASSWORD_FILE} >/dev/null && "
    "chmod 0600 /home/deploy/.docker/config.json"
)
TRAP = f"trap 'rm -f {PASSWORD_FILE}' EXIT; "


@pytest.fixture(autouse=True)
def fixed_file_name(monkeypatch):
    monkeypatch.setattr(registry_login_module.secrets, "token_hex", lambda n: "feedface" * 2)


def logged_in(mode="600", folder_mode="700", password=PASSWORD):
    return lambda user: {
        "folder": [folder_mode, user],
        "file": [mode, user],
        "auth_sha256": stored_auth_sha256("deploykit", password),
    }


def host_with(auths: dict) -> FakeHost:
    return FakeHost(
        facts={"Users": USERS, "DockerClientAuths": {"*": auths}}, data={"ssh_user": "deploy"}
    )


def login(host, password=PASSWORD):
    return run_operation(
        registry_login,
        host,
        registry="registry:5000",
        username="deploykit",
        password=password,
        users=["root", "deploy"],
    )


def test_first_login_uploads_the_password_privately_and_logs_both_users_in():
    commands = login(host_with({}))
    assert command_texts(commands) == [
        "install -d -m 0700 -o deploy /var/lib/deploykit-upload",
        f"install -m 0600 /dev/null {PASSWORD_FILE}",
        f"upload {PASSWORD_FILE} via {PASSWORD_FILE}.upload",
        TRAP + LOGIN_ROOT + " && " + LOGIN_DEPLOY,
    ]
    upload = commands[2]
    assert isinstance(upload, FileUploadCommand) and upload.src.getvalue() == PASSWORD
    assert all(PASSWORD not in text for text in command_texts(commands))


def test_same_credentials_with_private_files_is_a_noop():
    host = host_with({folder: logged_in()(user) for folder, user in zip(FOLDERS, USERS)})
    assert login(host) == []
    assert host.noop_reason == "root, deploy logged in to registry:5000"


def test_same_credentials_with_a_readable_file_only_puts_the_modes_right():
    auths = {FOLDERS[0]: logged_in()("root"), FOLDERS[1]: logged_in(mode="644")("deploy")}
    assert command_texts(login(host_with(auths))) == [
        "chmod 0600 /home/deploy/.docker/config.json",
        "chown deploy:deploy /home/deploy/.docker/config.json",
    ]


def test_a_rotated_password_logs_in_again_where_it_differs():
    auths = {
        FOLDERS[0]: logged_in()("root"),
        FOLDERS[1]: logged_in(password="the-old-one")("deploy"),
    }
    texts = command_texts(login(host_with(auths)))
    assert texts[-1] == TRAP + LOGIN_DEPLOY


def test_a_missing_user_says_to_bootstrap():
    host = host_with({})
    with pytest.raises(OperationError, match="user nobody does not exist; bootstrap first"):
        run_operation(
            registry_login, host, registry="r:5000", username="u", password="p", users=["nobody"]
        )


def test_docker_hub_logins_are_looked_up_under_the_index_key():
    asked = []

    class RecordingHost(FakeHost):
        def get_fact(self, fact_class, **kwargs):
            asked.append((fact_class.__name__, kwargs))
            return super().get_fact(fact_class, **kwargs)

    host = RecordingHost(facts={"Users": USERS, "DockerClientAuths": {"*": {}}}, data={})
    commands = run_operation(
        registry_login, host, registry="docker.io", username="me", password="p", users=["root"]
    )
    hub = {"key": "https://index.docker.io/v1/", "folders": FOLDERS[:1]}
    assert ("DockerClientAuths", hub) in asked
    assert "--password-stdin docker.io <" in command_texts(commands)[-1]


# -- the commands, run ---------------------------------------------------------------------

# Whoever runs the tests: `install -o` to oneself needs no root.
ME = (pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name)
FAKE_RUNUSER = """#!/bin/sh
# runuser -u USER -- COMMAND...: record the user, run the command as we are.
echo "$2" >> "$STUB_DIR/runuser.log"
shift 3
exec "$@"
"""
FAKE_DOCKER = """#!/bin/sh
# docker login --username U --password-stdin REGISTRY: writes config.json as docker does.
echo "$*" >> "$STUB_DIR/docker-argv.log"
password=$(cat)
[ "$password" = "wrong" ] && { echo "Error response from daemon: unauthorized" >&2; exit 1; }
mkdir -p "$DOCKER_CONFIG"
auth=$(printf '%s:%s' "$3" "$password" | base64 -w0)
printf '{"auths": {"%s": {"auth": "%s"}}}' "$5" "$auth" > "$DOCKER_CONFIG/config.json"
"""


def test_the_login_command_reads_stdin_and_removes_the_password_file(tmp_path):
    bin_dir = install_stubs(tmp_path, {"runuser": FAKE_RUNUSER, "docker": FAKE_DOCKER})
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    folder = tmp_path / "home" / ".docker"
    script = login_command(str(password_file), [(*ME, str(folder))], "r:5000", "me")
    completed = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert not password_file.exists()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert oct((folder / "config.json").stat().st_mode & 0o777) == "0o600"
    assert PASSWORD not in (tmp_path / "docker-argv.log").read_text()
    # What the fact then reads matches what the operation expects for these credentials.
    fact = DockerClientAuths()
    output = subprocess.run(
        ["sh", "-c", fact.command("r:5000", (str(folder),))], capture_output=True, text=True
    ).stdout
    state = fact.process([output])[str(folder)]
    assert state == {
        "folder": ["700", ME[0]],
        "file": ["600", ME[0]],
        "auth_sha256": stored_auth_sha256("me", PASSWORD),
    }


def test_a_refused_login_fails_and_still_removes_the_password_file(tmp_path):
    bin_dir = install_stubs(tmp_path, {"runuser": FAKE_RUNUSER, "docker": FAKE_DOCKER})
    password_file = tmp_path / "password"
    password_file.write_text("wrong")
    script = login_command(str(password_file), [(*ME, str(tmp_path / ".docker"))], "r:5000", "me")
    completed = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert completed.returncode != 0 and "unauthorized" in completed.stderr
    assert not password_file.exists()


def test_the_fact_reports_nothing_for_a_folder_that_does_not_exist(tmp_path):
    fact = DockerClientAuths()
    missing = str(tmp_path / "none")
    output = subprocess.run(
        ["sh", "-c", fact.command("r:5000", (missing,))], capture_output=True, text=True
    ).stdout
    assert fact.process([output]) == {missing: {}}


def test_stored_auth_digest_is_of_docker_logins_base64():
    auth = base64.b64encode(b"me:pw").decode()
    import hashlib

    assert stored_auth_sha256("me", "pw") == hashlib.sha256(auth.encode()).hexdigest()


# -- settings --------------------------------------------------------------------------------


def data(tmp_path, logins, secrets="REGISTRY_PASSWORD=s3cret\nDB_PASSWORD=x\n"):
    (tmp_path / "secrets.env").write_text(secrets)
    return {"docker_registry_logins": logins, "app_secrets_file": str(tmp_path / "secrets.env")}


def test_logins_read_from_settings_and_secrets(tmp_path):
    logins, problems = read_logins(
        data(
            tmp_path,
            {
                "registry:5000": {"username": "deploykit", "password_secret": "REGISTRY_PASSWORD"},
                "index.docker.io": {"username": "me", "password_secret": "REGISTRY_PASSWORD"},
            },
        )
    )
    assert problems == []
    assert sorted(logins) == ["docker.io", "registry:5000"]
    assert logins["registry:5000"].password == "s3cret"
    assert "s3cret" not in repr(logins["registry:5000"])


@pytest.mark.parametrize(
    "logins, problem",
    [
        (
            {"registry:5000": {"username": "u", "password_secret": "NOPE"}},
            "docker_registry_logins['registry:5000']: password_secret 'NOPE' is not set in the "
            "secrets file",
        ),
        (
            {"registry:5000": {"username": "u"}},
            "docker_registry_logins['registry:5000'] must be {'username': ..., "
            "'password_secret': ...}",
        ),
        (
            {"registry:5000": {"username": "a b", "password_secret": "REGISTRY_PASSWORD"}},
            "username must be a word, got 'a b'",
        ),
        (
            {"https://r/": {"username": "u", "password_secret": "REGISTRY_PASSWORD"}},
            "the key must be a registry as docker login takes it",
        ),
    ],
)
def test_bad_logins_are_named(tmp_path, logins, problem):
    found, problems = read_logins(data(tmp_path, logins))
    assert found == {} and len(problems) == 1
    assert problem in problems[0]
    assert "s3cret" not in problems[0]


def test_registry_passwords_stay_out_of_the_app_env(tmp_path, monkeypatch):
    from deploykit import appenv

    settings = data(
        tmp_path,
        {"registry:5000": {"username": "u", "password_secret": "REGISTRY_PASSWORD"}},
        secrets="REGISTRY_PASSWORD=s3cret\nSECRET_KEY_BASE=k\nDB_PASSWORD=d\nREDIS_PASSWORD=r\n",
    )
    assert password_secret_names(settings) == {"REGISTRY_PASSWORD"}
    host = SimpleNamespace(data=SimpleNamespace(get=settings.get))
    inventory = SimpleNamespace(groups={})
    monkeypatch.setattr("deploykit.config.knob", lambda data, key: settings.get(key, ""))
    monkeypatch.setattr(appenv, "load_envfile", lambda path: {})
    composed = appenv.host_app_env(host, inventory)
    assert "REGISTRY_PASSWORD" not in composed.values
    assert "SECRET_KEY_BASE" in composed.values
    assert "s3cret" not in composed.secret_values


def test_fact_output_is_read_per_folder_and_a_folder_never_made_is_empty():
    fact = DockerClientAuths()
    output = [
        "seen\t/root/.docker",
        "seen\t/home/deploy/.docker",
        "folder\t/home/deploy/.docker\t700 deploy",
        "file\t/home/deploy/.docker\t600 deploy",
        "auth\t/home/deploy/.docker\t" + "a" * 64,
    ]
    assert fact.process(output) == {
        "/root/.docker": {},
        "/home/deploy/.docker": {
            "folder": ["700", "deploy"],
            "file": ["600", "deploy"],
            "auth_sha256": "a" * 64,
        },
    }


# -- the planning-time question: which digest will the hosts pull? -----------------------

DIGEST = "sha256:" + "4" * 64


@pytest.fixture
def registry_answers(monkeypatch):
    """ask_from_host replaced: each call recorded, answered with `answers.answer`."""
    asked = SimpleNamespace(calls=[], answer=None)

    def ask(host, image, reference, login, insecure):
        asked.calls.append((image, reference))
        return asked.answer

    monkeypatch.setattr(registry_access, "ask_from_host", ask)
    return asked


def test_a_tag_resolves_to_the_digest_the_registry_answered(registry_answers):
    registry_answers.answer = ManifestAnswer("present", 200, "HTTP 200", False, DIGEST)
    resolved = registry_access.resolve_image(FakeHost(), "registry:5000/deploykit/app", "latest")
    assert resolved == registry_access.Resolved(digest=DIGEST)
    assert registry_answers.calls == [("registry:5000/deploykit/app", "latest")]


def test_a_rollback_asks_for_its_digest_and_a_missing_one_is_named(registry_answers):
    registry_answers.answer = ManifestAnswer("missing", 404, "HTTP 404")
    resolved = registry_access.resolve_image(FakeHost(), "registry:5000/deploykit/app", DIGEST)
    assert resolved.digest is None
    assert resolved.problem == (
        f"image registry:5000/deploykit/app@{DIGEST} does not exist in the registry "
        f"(HTTP 404 for https://registry:5000/v2/deploykit/app/manifests/{DIGEST})"
    )


def test_a_present_tag_without_a_digest_is_refused(registry_answers):
    """A roll cannot be pinned without a digest: refused while planning, not rolled by tag."""
    registry_answers.answer = ManifestAnswer("present", 200, "HTTP 200")
    resolved = registry_access.resolve_image(FakeHost(), "registry:5000/deploykit/app", "v2")
    assert resolved.digest is None
    assert "answered no digest for registry:5000/deploykit/app:v2" in resolved.problem
