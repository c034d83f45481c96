"""The sandbox registry is run like a real private one: HTTPS with a certificate from the
sandbox's own CA, and a password for every request. The hosts trust the CA and log in;
rolls go through it; wrong or missing credentials stop a deploy while planning, before
any host is touched; the password shows nowhere."""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .sandbox_world import (
    LoadRun,
    deploy_args,
    lb_urls,
    pushed_digest,
    pyinfra,
    registry_from_here,
)

HOSTS_WITH_DOCKER = ("web", "job")


def registry_password(fleet) -> str:
    return fleet.secrets()["REGISTRY_PASSWORD"]


def stored_auth(fleet, password: str) -> str:
    username = fleet.cluster["registry"]["username"]
    return base64.b64encode(f"{username}:{password}".encode()).decode()


# Tag -> manifest digest of the images push_fresh_tag pushed.
FRESH_DIGESTS: dict[str, str] = {}


def push_fresh_tag(fleet, source_tag: str = "v1") -> str:
    """A tag no host has pulled yet, of an image (and so a digest) no host has either:
    `source_tag`'s image with a label of its own, pushed from this machine through the
    login `make sandbox` made."""
    tag = f"auth-{secrets.token_hex(4)}"
    repository = f"{registry_from_here()}/deploykit/app"
    dockerfile = f"FROM {repository}:{source_tag}\nLABEL io.deploykit.test.fresh={tag}\n"
    built = subprocess.run(
        ["docker", "build", "--quiet", "--tag", f"{repository}:{tag}", "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    pushed = subprocess.run(
        ["docker", "push", "--quiet", f"{repository}:{tag}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    FRESH_DIGESTS[tag] = pushed_digest(tag)
    subprocess.run(["docker", "image", "rm", f"{repository}:{tag}"], capture_output=True)
    return tag


def has_image(fleet, host: str, tag: str) -> bool:
    """Whether the host has the image of a push_fresh_tag tag (hosts pull by digest)."""
    image = f"registry:5000/deploykit/app@{FRESH_DIGESTS[tag]}"
    code, _ = fleet.sh(host, f"docker image inspect {image}")
    return code == 0


def test_the_registry_asks_for_a_password_over_verified_https(fleet):
    context = ssl.create_default_context(cafile=fleet.cluster["registry"]["ca_file"])
    url = f"https://{registry_from_here()}/v2/"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(url, context=context, timeout=10)
    assert anonymous.value.code == 401
    assert anonymous.value.headers["WWW-Authenticate"] == 'Basic realm="deploykit-sandbox"'

    wrong = urllib.request.Request(
        url, headers={"Authorization": "Basic " + stored_auth(fleet, "x")}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, context=context, timeout=10)
    assert refused.value.code == 401

    right = urllib.request.Request(
        url, headers={"Authorization": "Basic " + stored_auth(fleet, registry_password(fleet))}
    )
    with urllib.request.urlopen(right, context=context, timeout=10) as response:
        assert response.status == 200

    # Plain HTTP gets no registry: Go's TLS server answers 400 to it.
    with pytest.raises(urllib.error.HTTPError) as plain:
        urllib.request.urlopen(f"http://{registry_from_here()}/v2/", timeout=10)
    assert plain.value.code == 400

    # From a host, by the name the hosts use, verified with the CA their engine trusts.
    code, output = fleet.sh(
        "web1",
        "curl -s -o /dev/null -w '%{http_code}' "
        "--cacert /etc/docker/certs.d/registry:5000/ca.crt https://registry:5000/v2/",
    )
    assert (code, output) == (0, "401")


def test_hosts_trust_the_ca_and_keep_their_credentials_private(fleet):
    ca = Path(fleet.cluster["registry"]["ca_file"]).read_text()
    wanted = stored_auth(fleet, registry_password(fleet))
    for name in [h for group in HOSTS_WITH_DOCKER for h in fleet.hosts(group)]:
        code, output = fleet.sh(name, "cat /etc/docker/certs.d/registry:5000/ca.crt")
        assert (code, output) == (0, ca), name
        code, output = fleet.sh(name, "cat /etc/docker/daemon.json")
        assert code == 0 and "insecure-registries" not in json.loads(output), (name, output)
        for user, home in (("deploy", "/home/deploy"), ("root", "/root")):
            code, output = fleet.sh(
                name, f"stat -c '%a %U %G' {home}/.docker {home}/.docker/config.json"
            )
            assert (code, output.split("\n")[:2]) == (
                0,
                [f"700 {user} {user}", f"600 {user} {user}"],
            ), (name, user, output)
            code, output = fleet.sh(name, f"cat {home}/.docker/config.json")
            assert json.loads(output)["auths"]["registry:5000"]["auth"] == wanted, (name, user)
        # Nothing of the login is left behind, and the app never gets the password.
        code, output = fleet.sh(name, "ls -A /var/lib/deploykit-upload")
        assert "registry-login" not in output, (name, output)
        code, output = fleet.sh(name, "cat /etc/deploykit/app.env")
        assert code == 0 and "REGISTRY_PASSWORD" not in output
        assert registry_password(fleet) not in output


def test_a_roll_pulls_through_the_authenticated_registry_under_load(on_v1):
    fleet = on_v1
    before = fleet.running_tag("web1")
    tag = push_fresh_tag(fleet)
    with LoadRun(lb_urls()) as load:
        run = pyinfra(*deploy_args(tag))
    assert run.returncode == 0, run.failure_excerpt()
    load.assert_no_failed_request()
    assert {name: fleet.running_tag(name) for name in fleet.hosts("web")} == {
        name: tag for name in fleet.hosts("web")
    }
    # Pulled through the registry, by the digest the tag had.
    assert all(has_image(fleet, name, tag) for name in fleet.hosts("web"))
    assert registry_password(fleet) not in run.output
    # Back where the other modules expect the fleet.
    back = pyinfra(*deploy_args(before))
    assert back.returncode == 0, back.failure_excerpt()


def _refused_deploy(fleet, tmp_path, *extra: str, secrets_text: str):
    """A roll to a tag no host has, with other settings; what the hosts look like before
    and after, for the assertions."""
    tag = push_fresh_tag(fleet)
    secrets_file = tmp_path / "secrets.env"
    secrets_file.touch(mode=0o600)
    secrets_file.write_text(secrets_text)
    tags_before = {name: fleet.running_tag(name) for name in fleet.hosts("web")}
    run = pyinfra(*deploy_args(tag, "--data", f"app_secrets_file={secrets_file}", *extra))
    assert run.returncode != 0
    assert "Starting operation" not in run.output  # nothing ran: no pull, no drain
    assert set(fleet.server_states().values()) == {"UP"}
    assert {name: fleet.running_tag(name) for name in fleet.hosts("web")} == tags_before
    assert not any(has_image(fleet, name, tag) for name in fleet.hosts("web"))
    return run


def test_a_wrong_password_is_refused_while_planning(on_v1, tmp_path):
    fleet = on_v1
    right = registry_password(fleet)
    wrong = secrets.token_hex(24)
    text = Path(fleet.cluster["secrets_file"]).read_text().replace(right, wrong)
    with LoadRun(lb_urls()) as load:
        run = _refused_deploy(fleet, tmp_path, secrets_text=text)
    assert (
        "registry registry:5000 refused the credentials of user deploykit for deploykit/app: "
        "HTTP 401: UNAUTHORIZED authentication required; check REGISTRY_PASSWORD"
    ) in run.output, run.output[-3000:]
    for shown in (right, wrong, stored_auth(fleet, right), stored_auth(fleet, wrong)):
        assert shown not in run.output
    load.assert_no_failed_request()


def test_missing_credentials_are_refused_naming_the_registry(on_v1, tmp_path):
    fleet = on_v1
    text = "".join(
        line + "\n"
        for line in Path(fleet.cluster["secrets_file"]).read_text().splitlines()
        if not line.startswith("REGISTRY_PASSWORD=")
    )
    run = _refused_deploy(fleet, tmp_path, "--data", "docker_registry_logins={}", secrets_text=text)
    assert (
        "registry registry:5000 asks for credentials to pull deploykit/app (HTTP 401, asking "
        'for credentials (Basic realm="deploykit-sandbox")); docker_registry_logins has none '
        "for registry:5000"
    ) in run.output, run.output[-3000:]


PS_SAMPLER = (
    "rm -f /tmp/ps-stop /tmp/ps.log; end=$(( $(date +%s) + 600 )); "
    "while [ ! -e /tmp/ps-stop ] && [ $(date +%s) -lt $end ]; do ps -eo args >> /tmp/ps.log; "
    "done"
)


def test_a_host_holding_another_credential_logs_in_again_and_shows_no_password(fleet):
    """A password rotated in the secrets file: the host's stored credential differs, so
    provision logs in again, and a second run changes nothing. Meanwhile `ps` on the host
    is sampled, and the run prints its commands, facts and diffs (-vvv --diff)."""
    password = registry_password(fleet)
    old = stored_auth(fleet, "an-older-password")
    for home, user in (("/home/deploy", "deploy"), ("/root", "root")):
        config = json.dumps({"auths": {"registry:5000": {"auth": old}}})
        code, output = fleet.sh("web2", f"echo '{config}' > {home}/.docker/config.json", user)
        assert code == 0, output
    sampler = fleet.container("web2").exec_run(["sh", "-c", PS_SAMPLER], detach=True)
    assert sampler is not None
    try:
        run = pyinfra(
            "inventories/sandbox.py", "deploys/provision.py", "--limit", "web2", "--diff", "-vvv"
        )
    finally:
        fleet.sh("web2", "touch /tmp/ps-stop")
    assert run.returncode == 0, run.failure_excerpt()
    assert "docker login --username deploykit --password-stdin registry:5000" in run.output
    for shown in (password, stored_auth(fleet, password)):
        assert shown not in run.output
    code, sampled = fleet.sh("web2", "cat /tmp/ps.log")
    assert code == 0 and sampled.count("COMMAND") > 10  # it sampled all along
    assert password not in sampled and stored_auth(fleet, password) not in sampled
    for home, user in (("/home/deploy", "deploy"), ("/root", "root")):
        code, output = fleet.sh("web2", f"cat {home}/.docker/config.json")
        stored = json.loads(output)["auths"]["registry:5000"]["auth"]
        assert stored == stored_auth(fleet, password), user
        code, output = fleet.sh("web2", f"stat -c '%a %U' {home}/.docker/config.json")
        assert output.strip() == f"600 {user}"
    again = pyinfra("inventories/sandbox.py", "deploys/provision.py", "--limit", "web2")
    assert again.returncode == 0 and again.grand_total()["changed"] == 0, (
        again.changed_operations(),
        again.failure_excerpt(),
    )
