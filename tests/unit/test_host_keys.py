"""Host key pinning: names, fingerprints and pinned keys as OpenSSH has them, and the
refusal for a host with no pinned key (which needs no connection)."""

from __future__ import annotations

import subprocess

from deploykit.host_keys import fingerprint, host_key_problem, known_hosts_name, pinned_keys


def generated_key(tmp_path) -> tuple[str, str]:
    """(base64 key, fingerprint as ssh-keygen prints it) of a fresh ED25519 key."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True
    )
    key = (tmp_path / "key.pub").read_text().split()[1]
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(tmp_path / "key.pub")], capture_output=True, text=True
    )
    return key, listed.stdout.split()[1]


def test_known_hosts_names_a_host_off_port_22_with_its_port():
    assert known_hosts_name("192.0.2.21", 22) == "192.0.2.21"
    assert known_hosts_name("127.0.0.1", 2211) == "[127.0.0.1]:2211"


def test_fingerprint_is_the_one_ssh_keygen_prints(tmp_path):
    key, expected = generated_key(tmp_path)
    assert fingerprint(key) == expected


def test_pinned_keys_are_read_by_host_and_port(tmp_path):
    key, _ = generated_key(tmp_path)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"# web1\n[127.0.0.1]:2211 ssh-ed25519 {key}\n")
    assert pinned_keys(str(known_hosts), "[127.0.0.1]:2211") == {"ssh-ed25519": key}
    assert pinned_keys(str(known_hosts), "[127.0.0.1]:2212") == {}
    assert pinned_keys(str(tmp_path / "missing"), "[127.0.0.1]:2211") == {}


def test_a_host_without_a_pinned_key_is_refused_with_the_step_to_take(tmp_path):
    known_hosts = tmp_path / "staging.known_hosts"
    known_hosts.write_text("# nothing pinned yet\n")
    problem = host_key_problem(
        "web1.staging.example.com", "192.0.2.21", 22, str(known_hosts), "inventories/staging.py"
    )
    assert problem == (
        f"no SSH host key is pinned for web1.staging.example.com (192.0.2.21) in {known_hosts}: "
        "run bin/pin-host-keys inventories/staging.py, compare the fingerprints it prints with "
        "the hosts' own (out of band), then commit the file"
    )
