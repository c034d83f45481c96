"""Pinned SSH host keys: a host whose key changed stops the whole run before anything is
sent, saying so and what to check; bin/pin-host-keys pins keys whose fingerprints match
the hosts' own and never replaces a changed one unless told to."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager

from .sandbox_world import REPO_ROOT, pyinfra


@contextmanager
def regenerated_host_key(fleet, name: str):
    """`name` gets new SSH host keys, as after a reinstall; its own come back after."""
    code, output = fleet.sh(
        name,
        "rm -rf /root/host-keys && mkdir -m 700 /root/host-keys "
        "&& cp -a /etc/ssh/ssh_host_* /root/host-keys/ && rm /etc/ssh/ssh_host_* "
        "&& ssh-keygen -q -A && systemctl restart ssh",
    )
    assert code == 0, output
    try:
        yield
    finally:
        code, output = fleet.sh(
            name,
            "rm /etc/ssh/ssh_host_* && cp -a /root/host-keys/* /etc/ssh/ "
            "&& rm -rf /root/host-keys && systemctl restart ssh",
        )
        assert code == 0, output
        assert fleet.ssh(name, "true").returncode == 0, "the pinned key is back"


def own_fingerprint(fleet, name: str) -> str:
    """The host's ED25519 fingerprint, read on the host itself (out of band: docker exec)."""
    code, output = fleet.sh(name, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
    assert code == 0, output
    return output.split()[1]


def journal_counts(fleet, name: str) -> tuple[int, int]:
    """(SSH logins accepted, commands run with sudo) so far, from the host's journal."""
    _, output = fleet.sh(
        name,
        "journalctl --no-pager -o cat | grep -c 'Accepted publickey'; "
        "journalctl --no-pager -o cat | grep -c 'COMMAND='",
    )
    accepted, commands = output.split()
    return int(accepted), int(commands)


def test_a_changed_host_key_stops_the_run_before_anything_is_sent(fleet):
    with regenerated_host_key(fleet, "web2"):
        before = {name: journal_counts(fleet, name) for name in fleet.hosts()}
        run = pyinfra("inventories/sandbox.py", "deploys/provision.py")
        after = {name: journal_counts(fleet, name) for name in fleet.hosts()}
        new_fingerprint = own_fingerprint(fleet, "web2")
    assert run.returncode != 0
    name = f"[127.0.0.1]:{fleet.ssh_port('web2')}"
    assert f"the SSH host key of web2 ({name}) has CHANGED; nothing was sent to it" in run.output
    assert f"web2 now presents: ED25519 {new_fingerprint}" in run.output
    assert "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" in run.output
    assert (
        "Only if it matches, pin it: bin/pin-host-keys inventories/sandbox.py --replace web2"
        in (run.output)
    )
    assert "Starting operation" not in run.output and "Traceback" not in run.output
    # web2 saw no login at all; no host ran a single command.
    assert after["web2"] == before["web2"]
    assert {name: counts[1] for name, counts in after.items()} == {
        name: counts[1] for name, counts in before.items()
    }
    # With its own key back, the same run goes through.
    assert fleet.ssh("web2", "true").returncode == 0


def pin_host_keys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO_ROOT / "bin" / "pin-host-keys"), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def test_pin_host_keys_pins_what_the_hosts_hold_and_replaces_only_when_told(fleet, tmp_path):
    known_hosts = tmp_path / "pinned.known_hosts"
    inventory = tmp_path / "pinned.py"
    hosts = ", ".join(
        f'("{name}", {{"ssh_hostname": "127.0.0.1", "ssh_port": {fleet.ssh_port(name)}, '
        f'"ssh_known_hosts_file": "{known_hosts}", "ssh_strict_host_key_checking": "yes"}})'
        for name in ("web1", "web2")
    )
    inventory.write_text(f"web = [{hosts}]\n")

    first = pin_host_keys(str(inventory))
    assert first.returncode == 0, first.stdout
    for name in ("web1", "web2"):
        assert f"ED25519 {own_fingerprint(fleet, name)}  new" in first.stdout, first.stdout
    assert "compare" in first.stdout.lower() and "out of band" in first.stdout
    pinned = known_hosts.read_text()
    assert pinned.count("ssh-ed25519") == 2

    with regenerated_host_key(fleet, "web2"):
        refused = pin_host_keys(str(inventory))
        assert refused.returncode != 0
        assert "CHANGED" in refused.stdout and "not replaced, see --replace" in refused.stdout
        assert known_hosts.read_text() == pinned
        replaced = pin_host_keys(str(inventory), "--replace", "web2")
        assert replaced.returncode == 0, replaced.stdout
        assert f"ED25519 {own_fingerprint(fleet, 'web2')}  REPLACED" in replaced.stdout
        assert known_hosts.read_text().count("ssh-ed25519") == 2
        assert known_hosts.read_text() != pinned
    # web2's own key is back: the pinned file is now the stale one, and says so.
    stale = pin_host_keys(str(inventory))
    assert stale.returncode != 0 and "CHANGED" in stale.stdout
