"""The documented ad hoc commands (`pyinfra INVENTORY exec -- ...`), run on the sandbox as
the docs write them, with the sandbox's inventory and host names in place of staging's:
each must work and print what an operator runs it for."""

from __future__ import annotations

import re
import shlex

import pytest

from .sandbox_world import REPO_ROOT, pyinfra

STAGING = "inventories/staging.py"

# name: (the command as the docs give it, the hosts it reaches on the sandbox (a group or
# a host), what each one's output must show)
EXAMPLES = {
    "uptime": (f"pyinfra {STAGING} exec -- uptime", None, r"load average"),
    "docker-ps": (f"pyinfra {STAGING} --limit web exec -- docker ps", "web", r"app-\S+"),
    "app-logs": (
        f"pyinfra {STAGING} --limit web1.staging.example.com exec -- "
        "'docker logs --tail 50 $(docker ps -q --filter label=io.deploykit.role=app)'",
        "web1",
        r'"GET /up HTTP/1\.1" 200',
    ),
    "haproxy-journal": (
        f"pyinfra {STAGING} --limit lb exec -- journalctl -u haproxy -n 20 --no-pager",
        "lb",
        r"haproxy",
    ),
    "auth-log": (
        f"pyinfra {STAGING} --limit db exec -- tail -n 20 /var/log/auth.log",
        "db",
        r"sshd|sudo",
    ),
}


def documented_text() -> str:
    """README.md and docs/, with shell line continuations joined and spaces collapsed."""
    texts = [(REPO_ROOT / "README.md").read_text()]
    texts += [path.read_text() for path in sorted((REPO_ROOT / "docs").glob("**/*.md"))]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(texts))
    return re.sub(r"[ \t]+", " ", joined)


def on_sandbox(example: str) -> list[str]:
    """The example's arguments after `pyinfra`, pointed at the sandbox."""
    words = shlex.split(example.replace("web1.staging.example.com", "web1"))
    assert words[:2] == ["pyinfra", STAGING]
    return ["inventories/sandbox.py", *words[2:]]


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_documented_ad_hoc_command_works_on_the_sandbox(on_v1, name):
    example, reaches, expected = EXAMPLES[name]
    assert example in documented_text(), f"no longer documented as: {example}"
    run = pyinfra(*on_sandbox(example))
    assert run.returncode == 0, run.failure_excerpt()
    hosts = [reaches] if reaches in on_v1.hosts() else on_v1.hosts(reaches)
    assert hosts
    for host in hosts:
        # Each host reached answered, its lines prefixed by its name.
        assert re.search(rf"\[{host}\].*{expected}", run.output), (host, run.output[-3000:])
