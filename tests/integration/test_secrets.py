"""The app's env file on the sandbox: composed from settings and secrets, private to the
deploy user, never printed, and refused before any change when it would be wrong."""

from __future__ import annotations

import secrets as random
import subprocess

import pytest

from deploykit.secrets import GIT_CRYPT_MAGIC, load_secrets

from .sandbox_world import PYINFRA, REPO_ROOT, copy_sandbox_inventory, group_data, pyinfra

ENV_FILE = "/etc/deploykit/app.env"
SECRETS_FILE = ".sandbox/secrets.env"


@pytest.fixture(scope="module")
def env_files(fleet):
    """web1's and job1's env files rendered by provision (a no-op in the full suite,
    where the first provision did it)."""
    run = pyinfra(
        "inventories/sandbox.py", "deploys/provision.py", "--limit", "web1", "--limit", "job1"
    )
    assert run.returncode == 0, run.failure_excerpt()
    return fleet


def secret_values() -> list[str]:
    return list(load_secrets(SECRETS_FILE).values())


def env_file_state(fleet, host: str = "web1") -> str:
    code, output = fleet.sh(host, f"sha256sum {ENV_FILE} && stat -c '%a %U %G %Y' {ENV_FILE}")
    assert code == 0, output
    return output


def world_with(tmp_path, app_env: dict | None = None, secrets_file: str | None = None):
    """The sandbox inventory in tmp_path, beside group_data that overrides app_env (in
    all.py) or app_secrets_file (in sandbox.py, the inventory file's own group)."""
    inventory = copy_sandbox_inventory(tmp_path)
    (tmp_path / "group_data").mkdir()
    if app_env is not None:
        (tmp_path / "group_data" / "all.py").write_text(f"app_env = {app_env!r}\n")
    if secrets_file is not None:
        (tmp_path / "group_data" / "sandbox.py").write_text(
            f"app_secrets_file = {secrets_file!r}\n"
        )
    return str(inventory)


def repository_app_env() -> dict:
    return dict(group_data("all")["app_env"])


def assert_refused_before_any_change(fleet, inventory: str, message: str):
    before = env_file_state(fleet)
    run = pyinfra(inventory, "deploys/provision.py", "--limit", "web1")
    assert run.returncode != 0
    assert message in run.output, run.output[-3000:]
    assert "refusing to run, nothing was changed" in run.output
    assert "Starting operation" not in run.output
    assert env_file_state(fleet) == before
    return run


def test_env_file_holds_settings_secrets_and_inventory_addresses(env_files):
    db_ip = env_files.ip("db1")
    values = load_secrets(SECRETS_FILE)
    for host in ("web1", "job1"):
        code, output = env_files.sh(host, f"cat {ENV_FILE}")
        assert code == 0, output
        lines = output.splitlines()
        assert f"SECRET_KEY_BASE={values['SECRET_KEY_BASE']}" in lines
        assert (
            f"DATABASE_URL=postgres://app:{values['DB_PASSWORD']}@{db_ip}:5432/app?sslmode=require"
            in lines
        )
        assert f"REDIS_URL=redis://:{values['REDIS_PASSWORD']}@{db_ip}:6379/0" in lines
        assert "GUNICORN_WORKERS=2" in lines


def test_env_file_is_private_to_the_deploy_user(env_files):
    for host in ("web1", "job1"):
        code, output = env_files.sh(host, f"stat -c '%a %U %G' {ENV_FILE}")
        assert (code, output.strip()) == (0, "600 deploy deploy")
        code, output = env_files.sh(host, f"su nobody -s /bin/sh -c 'cat {ENV_FILE}'")
        assert code != 0 and "Permission denied" in output, output
        assert env_files.ssh(host, f"cat {ENV_FILE} >/dev/null").returncode == 0


def test_missing_required_variable_is_refused_before_any_change(env_files, tmp_path):
    app_env = repository_app_env()
    del app_env["REDIS_URL"]
    assert_refused_before_any_change(
        env_files,
        world_with(tmp_path, app_env=app_env),
        "host web1: REDIS_URL is required (Redis connection URL, composed in"
        " group_data/all.py) but not set",
    )


def test_value_of_the_wrong_type_is_refused_naming_it(env_files, tmp_path):
    app_env = {**repository_app_env(), "GUNICORN_WORKERS": "abc"}
    assert_refused_before_any_change(
        env_files,
        world_with(tmp_path, app_env=app_env),
        "host web1: GUNICORN_WORKERS (app_env) must be an int, got 'abc'",
    )


def test_undefined_reference_is_refused_naming_where_it_is_used(env_files, tmp_path):
    app_env = {**repository_app_env(), "REDIS_URL": "redis://:${REDIS_PASWORD}@${DB_HOST}/0"}
    assert_refused_before_any_change(
        env_files,
        world_with(tmp_path, app_env=app_env),
        "app_env: REDIS_URL refers to ${REDIS_PASWORD}, which is not defined"
        " (did you mean REDIS_PASSWORD?)",
    )


def test_locked_secrets_file_is_refused_with_how_to_unlock(env_files, tmp_path):
    locked = tmp_path / "production.env"
    locked.write_bytes(GIT_CRYPT_MAGIC + random.token_bytes(64))
    run = assert_refused_before_any_change(
        env_files,
        world_with(tmp_path, secrets_file=str(locked)),
        f"secrets file {locked} is still encrypted by git-crypt",
    )
    assert "git-crypt unlock" in run.output


def test_missing_secrets_file_is_refused(env_files, tmp_path):
    assert_refused_before_any_change(
        env_files,
        world_with(tmp_path, secrets_file=str(tmp_path / "nope.env")),
        f"secrets file {tmp_path / 'nope.env'} does not exist",
    )


def test_dry_diff_shows_a_secret_change_without_any_secret_value(env_files, tmp_path):
    old = load_secrets(SECRETS_FILE)
    new = {**old, "DB_PASSWORD": random.token_hex(24)}
    changed = tmp_path / "secrets.env"
    changed.write_text("".join(f"{name}={value}\n" for name, value in new.items()))
    before = env_file_state(env_files)
    # Without -y: pyinfra prints no diff when asked not to prompt.
    completed = subprocess.run(
        [PYINFRA, world_with(tmp_path, secrets_file=str(changed))]
        + ["deploys/provision.py", "--dry", "--diff", "--limit", "web1"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout
    assert completed.returncode == 0, output[-3000:]
    assert f"[web1] Will modify {ENV_FILE}" in output
    assert "- DB_PASSWORD=********(old)" in output
    assert "+ DB_PASSWORD=********" in output
    assert f"@{env_files.ip('db1')}:5432/app?sslmode=require" in output
    leaked = [value for value in {*old.values(), *new.values()} if value in output]
    assert leaked == []
    assert env_file_state(env_files) == before


def test_ps_on_a_web_host_shows_no_secret(on_v1, env_files):
    code, output = on_v1.sh("web1", "ps -eo args")
    assert code == 0
    # The app's own processes are in the listing (nested containers' PIDs are visible).
    assert "deploykit-app" in output or "gunicorn" in output, output
    assert [value for value in secret_values() if value in output] == []


def test_a_rotation_shown_at_vvv_with_diff_prints_no_secret_old_or_new(env_files, tmp_path):
    """Every secret rotated at once (the app's, the Redis and PostgreSQL passwords, the
    HAProxy key), previewed with `--dry --diff -vvv` on every host: neither the old nor
    the new values, nor the role's SCRAM verifier, nor a line of either private key is
    printed, by the diff or by the facts pyinfra prints at -vvv (issue 13, 10 and 11)."""
    from sandbox.tls import ensure_self_signed_pem

    fleet = env_files
    old = load_secrets(SECRETS_FILE)
    new = {name: random.token_hex(24) for name in old}
    rotated = tmp_path / "secrets.env"
    rotated.write_text("".join(f"{name}={value}\n" for name, value in new.items()))
    new_pem = ensure_self_signed_pem(tmp_path / "haproxy.pem").read_text()
    old_pem = (REPO_ROOT / ".sandbox" / "tls" / "haproxy.pem").read_text()
    inventory = copy_sandbox_inventory(tmp_path)
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "sandbox.py").write_text(
        f"app_secrets_file = {str(rotated)!r}\n"
        f"haproxy_tls_certificate = {str(tmp_path / 'haproxy.pem')!r}\n"
    )
    code, verifier = fleet.sh(
        "db1",
        'cd / && su postgres -c "psql -tA -c'
        ' \\"SELECT rolpassword FROM pg_authid WHERE rolname = \'app\'\\""',
    )
    assert code == 0 and verifier.strip().startswith("SCRAM-SHA-256$"), verifier
    states_before = {host: env_file_state(fleet, host) for host in ("web1", "job1")}
    completed = subprocess.run(
        [PYINFRA, str(inventory), "deploys/provision.py", "--dry", "--diff", "-vvv"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
        check=False,
    )
    output = completed.stdout
    assert completed.returncode == 0, output[-3000:]
    # The run did show the changes, and read the facts it prints at -vvv.
    assert f"[web1] Will modify {ENV_FILE}" in output
    assert "Will modify /etc/redis/redis.conf" in output
    assert "Will modify /etc/haproxy/certs/site.pem" in output
    assert "- requirepass ********(old)" in output
    assert "+ requirepass ********" in output
    key_lines = [
        line
        for pem in (old_pem, new_pem)
        for line in pem.split("PRIVATE KEY-----", 1)[1].splitlines()[1:-1]
        if len(line) > 20
    ]
    assert key_lines
    leaked = {
        "secret values": [v for v in {*old.values(), *new.values()} if v in output],
        "SCRAM verifier": [verifier.strip()] if verifier.strip() in output else [],
        "private key lines": [line for line in key_lines if line in output],
    }
    assert leaked == {"secret values": [], "SCRAM verifier": [], "private key lines": []}
    assert {host: env_file_state(fleet, host) for host in ("web1", "job1")} == states_before
